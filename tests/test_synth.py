"""The synthetic video world and its demo releases in LVBench / Video-MME on-disk formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from vamba_eval.synth import DEMO_NOTICE, write_lvbench_demo, write_videomme_demo
from vamba_eval.synth import lvbench, questions, render, videomme, world

pa = pytest.importorskip("pyarrow")
import pandas as pd  # noqa: E402  (after the pyarrow skip: parquet needs it)

LVB_CATEGORIES = {"key information retrieval", "event understanding", "summarization",
                  "entity recognition", "reasoning", "temporal grounding"}
VMME_TASKS = {"Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition",
              "Object Recognition", "OCR Problems", "Counting Problem", "Temporal Reasoning",
              "Spatial Reasoning", "Action Reasoning", "Object Reasoning", "Information Synopsis"}
VMME_COLUMNS = ["video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id",
                "task_type", "question", "options", "answer"]
SPAN = re.compile(r"^\d{2}:\d{2}-\d{2}:\d{2}$")
SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {
        "lvb": write_lvbench_demo(root / "lvb", seed=0),
        "lvb_again": write_lvbench_demo(root / "lvb_again", seed=0),
        "lvb_other": write_lvbench_demo(root / "lvb_other", seed=1),
        "vmme": write_videomme_demo(root / "vmme", seed=0),
        "vmme_again": write_videomme_demo(root / "vmme_again", seed=0),
        "vmme_other": write_videomme_demo(root / "vmme_other", seed=1),
    }


def _records(folder: Path) -> list[dict]:
    with open(folder / lvbench.META_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _decode(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


# ---------------------------------------------------------------- determinism


def test_same_seed_same_bytes(releases):
    a, b = releases["lvb"], releases["lvb_again"]
    assert _bytes(a / lvbench.META_FILE) == _bytes(b / lvbench.META_FILE)
    for mp4 in sorted((a / "videos").glob("*.mp4")):
        assert _bytes(mp4) == _bytes(b / "videos" / mp4.name)
    a, b = releases["vmme"], releases["vmme_again"]
    assert _bytes(a / videomme.PARQUET_FILE) == _bytes(b / videomme.PARQUET_FILE)
    for srt in sorted((a / "subtitle").glob("*.srt")):
        assert _bytes(srt) == _bytes(b / "subtitle" / srt.name)
    one = lvbench.write_parquet_repack(releases["lvb"], releases["lvb"].parent / "repack_1.parquet")
    two = lvbench.write_parquet_repack(releases["lvb_again"], releases["lvb"].parent / "repack_2.parquet")
    assert _bytes(one) == _bytes(two)


def test_same_seed_same_decoded_frames(tmp_path):
    script = world.random_script(np.random.default_rng(5), 20)
    one, _ = _decode(render.render(script, tmp_path / "one.mp4"))
    two, _ = _decode(render.render(script, tmp_path / "two.mp4"))
    assert len(one) == len(two) == 80
    assert all(np.array_equal(x, y) for x, y in zip(one, two))


def test_different_seeds_differ(releases):
    assert _bytes(releases["lvb"] / lvbench.META_FILE) != _bytes(releases["lvb_other"] / lvbench.META_FILE)
    assert (_bytes(releases["vmme"] / videomme.PARQUET_FILE)
            != _bytes(releases["vmme_other"] / videomme.PARQUET_FILE))
    rng = np.random.default_rng
    assert world.random_script(rng(0), 60) == world.random_script(rng(0), 60)
    assert world.random_script(rng(0), 60) != world.random_script(rng(1), 60)


# ---------------------------------------------------------------- LVBench format


def test_lvbench_records_have_the_official_shape(releases):
    records = _records(releases["lvb"])
    assert len(records) == lvbench.DEMO_VIDEOS
    uid_types, n_double = set(), 0
    for rec in records:
        assert list(rec) == ["key", "type", "video_info", "qa"]
        assert rec["type"] in lvbench.GENRES
        info = rec["video_info"]
        assert set(info) == {"duration_minutes", "fps", "resolution"}
        assert set(info["resolution"]) == {"width", "height"}
        assert (info["resolution"]["width"], info["resolution"]["height"]) == (160, 96)
        assert (releases["lvb"] / "videos" / f"{rec['key']}.mp4").is_file()
        assert len(rec["qa"]) == 5
        for qa in rec["qa"]:
            assert set(qa) == {"uid", "question", "answer", "question_type", "time_reference"}
            uid_types.add(type(qa["uid"]))
            assert isinstance(qa["question_type"], list) and qa["question_type"]
            assert set(qa["question_type"]) <= LVB_CATEGORIES
            n_double += len(qa["question_type"]) == 2
            assert SPAN.match(qa["time_reference"])
    assert uid_types == {int, str}
    assert n_double > 0
    uids = [str(qa["uid"]) for rec in records for qa in rec["qa"]]
    assert len(set(uids)) == len(uids)
    covered = {c for rec in records for qa in rec["qa"] for c in qa["question_type"]}
    assert covered == LVB_CATEGORIES


def test_lvbench_questions_have_four_option_lines_and_a_gold_letter(releases):
    for rec in _records(releases["lvb"]):
        for qa in rec["qa"]:
            lines = qa["question"].split("\n")
            option_lines = [ln for ln in lines if re.match(r"^\([A-Z]\) ", ln)]
            assert [ln[:4] for ln in option_lines] == ["(A) ", "(B) ", "(C) ", "(D) "]
            assert lines[-4:] == option_lines and lines[0] and len(lines) == 5
            assert len({ln[4:] for ln in option_lines}) == 4
            assert qa["answer"] in "ABCD" and len(qa["answer"]) == 1


def test_lvbench_parquet_repack(releases):
    path = lvbench.write_parquet_repack(releases["lvb"])
    df = pd.read_parquet(path)
    assert list(df.columns) == list(lvbench.REPACK_COLUMNS)
    records = _records(releases["lvb"])
    assert len(df) == sum(len(r["qa"]) for r in records)
    first = records[0]["qa"][0]
    row = df.iloc[0]
    assert row["uid"] == str(first["uid"]) and row["question"] == first["question"]
    assert list(row["question_type"]) == first["question_type"]
    assert (releases["lvb"] / row["video_path"]).is_file()


# ---------------------------------------------------------------- Video-MME format


def test_videomme_parquet_has_the_official_columns(releases):
    df = pd.read_parquet(releases["vmme"] / videomme.PARQUET_FILE)
    assert list(df.columns) == VMME_COLUMNS
    assert len(df) == videomme.DEMO_VIDEOS * videomme.QUESTIONS_PER_VIDEO
    assert (df.groupby("video_id").size() == 3).all()
    for row in df.itertuples(index=False):
        assert re.fullmatch(r"\d{3}", row.video_id)
        assert row.question_id.startswith(row.video_id + "-")
        assert row.duration in {"short", "medium", "long"}
        assert row.sub_category in videomme.DOMAINS[row.domain]
        assert row.task_type in VMME_TASKS
        assert row.url.endswith(row.videoID)
        assert [o[:3] for o in row.options] == ["A. ", "B. ", "C. ", "D. "]
        assert row.answer in {"A", "B", "C", "D"}
        assert (releases["vmme"] / "data" / f"{row.videoID}.mp4").is_file()
        if row.duration == "long":
            assert (releases["vmme"] / "subtitle" / f"{row.videoID}.srt").is_file()
    assert sorted(set(df.question_id)) == sorted(f"{v:03d}-{k}" for v in range(1, videomme.DEMO_VIDEOS + 1) for k in (1, 2, 3))
    assert set(df.duration) == {"short", "medium", "long"}


def _parse_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for k, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(k)
        m = SRT_TIME.match(lines[1])
        assert m, lines[1]
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        assert len(lines) >= 3 and lines[2].strip()
        cues.append((start, end, " ".join(lines[2:])))
    return cues


def test_srt_files_parse_and_are_ordered(releases):
    plans = {p.video_key: p for p in videomme.plan_release(0)}
    files = sorted((releases["vmme"] / "subtitle").glob("*.srt"))
    assert files and {f.stem for f in files} == {k for k, p in plans.items() if p.has_subtitles}
    for srt in files:
        cues = _parse_srt(srt.read_text(encoding="utf-8"))
        assert cues
        for (s0, e0, _), (s1, _, _) in zip(cues, cues[1:]):
            assert s0 < e0 <= s1
        assert cues[-1][0] < cues[-1][1] <= plans[srt.stem].script.duration_s
        first = plans[srt.stem].script.scenes[0]
        assert first.background in cues[0][2]


# ---------------------------------------------------------------- videos


def test_mp4s_decode_with_the_expected_duration_fps_and_size(releases):
    expected = {f"{p.key}.mp4": p.script.duration_s for p in lvbench.plan_release(0)}
    expected.update({f"{p.video_key}.mp4": videomme.DURATIONS[p.duration]
                     for p in videomme.plan_release(0)})
    paths = [*sorted((releases["lvb"] / "videos").glob("*.mp4")),
             *sorted((releases["vmme"] / "data").glob("*.mp4"))]
    assert sorted(p.name for p in paths) == sorted(expected)
    for path in paths:
        frames, stream = _decode(path)
        assert len(frames) == expected[path.name] * 4
        assert stream.average_rate == 4
        assert frames[0].shape == (96, 160, 3)
    records = {r["key"]: r for r in _records(releases["lvb"])}
    for plan in lvbench.plan_release(0):
        assert records[plan.key]["video_info"]["duration_minutes"] == round(plan.script.duration_s / 60, 2)


def test_decoded_frame_at_scene_midpoint_has_the_scene_background(releases):
    for plan in lvbench.plan_release(0):
        frames, _ = _decode(releases["lvb"] / "videos" / f"{plan.key}.mp4")
        for scene in plan.script.scenes:
            frame = frames[int(scene.mid_s * 4)].astype(float)
            want = np.array(world.COLORS[scene.background], dtype=float)
            for block in (frame[:5, :5], frame[:5, -5:], frame[-5:, :5], frame[-5:, -5:]):
                assert np.abs(block.reshape(-1, 3).mean(0) - want).max() < 12, scene.background
            exact = render.render_frame(plan.script, int(scene.mid_s * 4) / 4)
            assert np.abs(frame - exact).mean() < 6  # the encoded video shows the script's frame


def test_mpeg4_fallback_when_libx264_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    script = world.random_script(np.random.default_rng(2), 10)
    frames, stream = _decode(render.render(script, tmp_path / "fallback.mp4"))
    assert stream.codec_context.name == "mpeg4" and len(frames) == 40


# ---------------------------------------------------------------- answers are really on screen


def _label_pixels(frame: np.ndarray, background: str) -> np.ndarray:
    fill, _ = render.text_colors(background)
    mask = np.all(frame == np.array(fill, dtype=np.uint8), axis=-1)
    mask[:, int(render.LABEL_WIDTH * frame.shape[1]):] = False  # the label area only
    mask[int(0.75 * frame.shape[0]):] = False  # not the tally under the label
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_key_information_digit_is_the_one_drawn():
    checked = 0
    for plan in lvbench.plan_release(0) + lvbench.plan_release(1, 4):
        for seed in range(3):
            q = questions.make_question("kir_digit", plan.script, np.random.default_rng(seed))
            if q is None:
                continue
            bg = re.search(r"background is (\w+)\?", q.text).group(1)
            scene = plan.script.scene_with_background(bg)
            assert q.answer_text == scene.text and scene.text_is_digit
            seen = _label_pixels(render.render_frame(plan.script, scene.mid_s), bg)
            scores = {d: _iou(seen, render.text_mask(d) == 255) for d in world.DIGITS}
            assert scores[scene.text] > 0.9
            assert max(scores, key=scores.get) == scene.text
            checked += 1
    assert checked >= 5


def _expected_gold(script: world.VideoScript, text: str):
    """The right answer to a released question, recomputed from the script (None: kind not covered)."""
    scenes = script.scenes
    if text.startswith("How many different background colours"):
        return str(len(scenes))
    if text.startswith("In which order do the background colours"):
        return ", ".join(s.background for s in scenes)
    if m := re.match(r"During which time span is the background (\w+)\?", text):
        s = script.scene_with_background(m.group(1))
        return questions.format_span(s.start_s, s.end_s)
    if m := re.match(r"During which time span is a (\w+) (\w+) on screen\?", text):
        (s,) = [s for s in scenes if any((x.color, x.kind) == m.group(1, 2) for x in s.shapes)]
        return questions.format_span(s.start_s, s.end_s)
    if m := re.match(r"What (?:number|word) is (?:shown|written) on screen while the background is (\w+)\?",
                     text):
        return script.scene_with_background(m.group(1)).text
    if m := re.match(r"How many shapes are shown in the scene with the (\w+) background\?", text):
        return str(len(script.scene_with_background(m.group(1)).shapes))
    if m := re.match(r"In the scene with the (\w+) background, how many marks", text):
        return str(script.scene_with_background(m.group(1)).n_ticks)
    if m := re.match(r"What is the background colour right after the scene that shows the \w+ (\w+)\?", text):
        k = next(i for i, s in enumerate(scenes) if s.text == m.group(1))
        return scenes[k + 1].background
    if m := re.match(r"What colour is the (\w+) in the scene that shows the \w+ (\w+)\?", text):
        (s,) = [s for s in scenes if s.text == m.group(2)]
        return next(x.color for x in s.shapes if x.kind == m.group(1))
    if m := re.match(r"A (\w+) (\w+) is shown while the background has which colour\?", text):
        (s,) = [s for s in scenes if any((x.color, x.kind) == m.group(1, 2) for x in s.shapes)]
        return s.background
    return None


def test_release_answers_match_the_scripts(releases):
    """Gold options in the released files agree with the scripts the videos were rendered from."""
    checked = 0
    plans = {p.key: p.script for p in lvbench.plan_release(0)}
    for rec in _records(releases["lvb"]):
        for qa in rec["qa"]:
            text, *options = qa["question"].split("\n")
            want = _expected_gold(plans[rec["key"]], text)
            if want is not None:
                assert options["ABCD".index(qa["answer"])][4:] == want, text
                checked += 1
    vplans = {p.video_key: p.script for p in videomme.plan_release(0)}
    for row in pd.read_parquet(releases["vmme"] / videomme.PARQUET_FILE).itertuples(index=False):
        want = _expected_gold(vplans[row.videoID], row.question)
        if want is not None:
            assert row.options["ABCD".index(row.answer)][3:] == want, row.question
            checked += 1
    assert checked >= 15


# ---------------------------------------------------------------- world and questions


@pytest.mark.parametrize("duration", [5, 20, 45, 90, 120])
def test_scripts_are_well_formed(duration):
    for seed in range(20):
        script = world.random_script(np.random.default_rng(seed), duration)
        scenes = script.scenes
        assert scenes[0].start_s == 0 and scenes[-1].end_s == duration
        assert all(a.end_s == b.start_s for a, b in zip(scenes, scenes[1:]))
        assert all(s.duration_s >= world.MIN_SCENE_S for s in scenes)
        assert len({s.background for s in scenes}) == len({s.text for s in scenes}) == len(scenes)
        for s in scenes:
            assert len({x.kind for x in s.shapes}) == len({x.color for x in s.shapes}) == len(s.shapes)
            assert s.background not in {c for i in range(len(s.shapes)) for c in s.colors_of(i)}
            assert all(s.start_s < e.time_s < s.end_s for e in s.events)
        assert world.caption(script).startswith(f"the video has {len(scenes)} scene")


def test_every_generator_gives_four_distinct_options_and_official_labels():
    seen_kinds = set()
    for seed in range(40):
        script = world.random_script(np.random.default_rng(seed), (20, 45, 90, 120)[seed % 4])
        for kind in questions.GENERATORS:
            q = questions.make_question(kind, script, np.random.default_rng(seed))
            if q is None:
                continue
            seen_kinds.add(kind)
            assert len(q.options) == 4 and len(set(q.options)) == 4 and q.answer in "ABCD"
            assert set(q.lvbench_types) <= LVB_CATEGORIES and q.task_type in VMME_TASKS
            assert 0 <= q.span[0] < q.span[1] <= script.duration_s
    assert seen_kinds == set(questions.GENERATORS)


def test_event_and_count_answers_follow_the_script():
    for seed in range(30):
        script = world.random_script(np.random.default_rng(seed), 90)
        q = questions.make_question("eu_event", script, np.random.default_rng(seed))
        m = re.match(r"In the scene with the (\w+) background, what happens to the (\w+) (\w+)\?", q.text)
        scene = script.scene_with_background(m.group(1))
        i = next(k for k, s in enumerate(scene.shapes) if (s.color, s.kind) == m.group(2, 3))
        ev = scene.shape_event(i)
        before, after = scene.start_s + 0.5, scene.end_s - 0.5
        if ev is None:
            assert q.answer_text == "it stays on screen unchanged"
        elif ev.kind == "appear":
            assert not scene.is_visible(i, before) and scene.is_visible(i, after)
            assert q.answer_text.startswith("it appears")
        elif ev.kind == "disappear":
            assert scene.is_visible(i, before) and not scene.is_visible(i, after)
            assert q.answer_text.startswith("it disappears")
        else:
            assert q.answer_text == f"it turns {scene.color_at(i, after)}"
        q = questions.make_question("count_ticks", script, np.random.default_rng(seed))
        if q is not None:
            bg = re.search(r"the (\w+) background", q.text).group(1)
            assert q.answer_text == str(script.scene_with_background(bg).ticks_at(script.duration_s))


def test_demo_notice_and_marker_file(releases):
    assert DEMO_NOTICE.format(fmt="LVBench") == "synthetic demo split in LVBench format — not LVBench"
    marker = (releases["vmme"] / "SYNTHETIC_DEMO.txt").read_text(encoding="utf-8")
    assert "not Video-MME" in marker


def test_demo_annotations_do_not_depend_on_the_hash_seed(tmp_path):
    """Set iteration order changes with PYTHONHASHSEED; the demo releases must not (reproducible data)."""
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, pathlib, sys\n"
        "from vamba_eval.registry import get_task\n"
        "from vamba_eval.synth.render import capture_scripts\n"
        "h = hashlib.sha256()\n"
        "for t in ['mvbench', 'lvbench', 'videomme', 'mlvu', 'longvideobench']:\n"
        "    with capture_scripts():\n"
        "        f = get_task(t).write_demo(pathlib.Path(sys.argv[1]) / t, 0)\n"
        "    for p in sorted(pathlib.Path(f).rglob('*')):\n"
        "        if p.is_file() and p.suffix in ('.json', '.jsonl', '.parquet', '.srt'):\n"
        "            h.update(p.read_bytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], env=env, capture_output=True,
                             text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


# ---------------------------------------------------------------- training releases

# What `vamba_eval.train` builds its data from (TaskDef.write_train_release, seed 1000): the questions, options,
# answers and video scripts. The bundled checkpoints' tokenizer is trained on this text, so a change here makes
# every new data build refuse the shipped teachers ("tokenizer is not …"): retrain and reship them, then update.
TRAIN_RELEASE_FINGERPRINTS = {
    "lvbench": ("6ba240941aadb4b1", 20), "videomme": ("7ce7e9acb52830a9", 18), "mlvu": ("1c754e105336de93", 27),
    "longvideobench": ("e7fc449cc4c37448", 8), "mvbench": ("5ad93022f453b196", 10),
}


@pytest.mark.parametrize("name", sorted(TRAIN_RELEASE_FINGERPRINTS))
def test_training_releases_stay_what_the_bundled_checkpoints_were_trained_on(name, tmp_path):
    import hashlib

    from vamba_eval.registry import get_task
    from vamba_eval.synth.render import capture_scripts

    task = get_task(name)
    with capture_scripts() as captured:  # annotations only: no video is encoded
        folder = task.write_train_release(tmp_path / "release", 1000)
        rows = [(s.sample_id, s.question, tuple(s.options), s.answer, Path(s.video.path).name)
                for s in task.load(Path(folder))]
    scripts = sorted((Path(k).name, repr(v[0])) for k, v in captured.items())
    got = (hashlib.sha256(repr((rows, scripts)).encode()).hexdigest()[:16], len(rows))
    assert got == TRAIN_RELEASE_FINGERPRINTS[name]
    assert len(task.load(task.write_demo(tmp_path / "demo", 0))) > 2 * len(rows)  # the demo is the larger one
