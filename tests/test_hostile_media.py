"""Hostile media (issue 10, item 1): every broken, odd or malicious video either decodes to the
right frames or becomes a clear, recorded sample error; the run finishes and the report counts them.

All media are real files written here with PyAV (frames carry their index, tests/video_fixtures.py).
Decoding goes through ``vamba_eval.run.process.decode`` — the path every executor takes — so the
data-root check runs as it does in a run. The last test drives a whole run over an LVBench-format
release (the one-row-per-question parquet repack, whose ``video_path`` column can name any file)
with the hostile media swapped in.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import sys
import weakref
from pathlib import Path
from typing import Optional

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import video_fixtures as vf  # noqa: E402
from hostile_media_files import VFR_PTS_MS, OpenSpy, build_media, index_of  # noqa: E402
from demo_runs import cache_env  # noqa: E402

from vamba_eval.run.process import WorkUnit, decode  # noqa: E402
from vamba_eval.types import Sample, VideoRef  # noqa: E402
from vamba_eval.video import (  # noqa: E402
    FrameCache,
    FrameFolderError,
    FrameSpec,
    VideoError,
    VideoNotFound,
    VideoOutsideDataRoot,
    VideoUnreadable,
    check_inside_root,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return build_media(tmp_path_factory.mktemp("hostile"))


def run_decode(path, root, spec: FrameSpec = FrameSpec(8), cache: Optional[FrameCache] = None,
               fps: Optional[float] = None):
    """Decode as a run does (process.decode: load error → data-root check → load_frames)."""
    sample = Sample("lvbench", "s", VideoRef(str(path), fps=fps), "q?", ("(A) a", "(B) b"), "A")
    return decode(WorkUnit("lvbench", sample, spec, str(root)), cache)


def expect_error(exc_info, cls, path, *texts: str) -> str:
    err = exc_info.value
    msg = str(err)
    assert type(err) is cls, (type(err), msg)
    assert msg.startswith(f"{path}: ") and err.hint and msg.endswith(err.hint), msg
    for text in texts:
        assert text in msg, msg
    return msg


# --------------------------------------------------------------------------- broken files


def test_truncated_mp4_is_a_clear_error(media):
    with pytest.raises(VideoError) as e:
        run_decode(media["truncated"], media["root"], FrameSpec(16))  # header intact, frames cut off
    expect_error(e, VideoUnreadable, media["truncated"], "could not decode frames", "re-download")
    with pytest.raises(VideoError) as e:
        run_decode(media["truncated_moov"], media["root"])  # moov atom (at the end) cut off
    expect_error(e, VideoUnreadable, media["truncated_moov"], "not a readable video", "truncated downloads")


def test_wrong_extension_is_sniffed_from_the_content(media):
    for key, n in (("mkv_as_mp4", 30), ("gif_as_mp4", 12)):
        video = run_decode(media[key], media["root"], FrameSpec(6, drop_odd=False))
        assert video.meta.num_frames == n
        assert [index_of(f) for f in video.frames] == list(video.indices)
    with pytest.raises(VideoError) as e:  # an HTML error page saved as .mp4
        run_decode(media["text"], media["root"])
    expect_error(e, VideoUnreadable, media["text"], "not a readable video", "HTML error pages")


def test_zero_byte_file(media):
    with pytest.raises(VideoError) as e:
        run_decode(media["empty"], media["root"])
    expect_error(e, VideoUnreadable, media["empty"], "empty (0 bytes)")


def test_audio_only_file(media):
    if "audio" not in media:
        pytest.skip("no audio encoder in this PyAV build")
    with pytest.raises(VideoError) as e:
        run_decode(media["audio"], media["root"])
    expect_error(e, VideoUnreadable, media["audio"], "no video stream (streams: audio)", "not an audio track")


def test_unexpected_ffmpeg_error_is_a_sample_error(media, monkeypatch):
    """Any FFmpeg error escaping the decoder (here an internal "bug" error) is VideoUnreadable,
    which a run records, instead of a raw av exception that would end the run."""
    from vamba_eval.video import decode as dec

    def boom(self, *args):
        raise av.error.BugError(-1, "internal bug")

    monkeypatch.setattr(dec._FileDecoder, "_sequential", boom)
    with pytest.raises(VideoError) as e:
        run_decode(media["ok"], media["root"], FrameSpec(30))
    expect_error(e, VideoUnreadable, media["ok"], "FFmpeg failed while reading it (BugError")


def test_missing_file(media):
    with pytest.raises(VideoError) as e:
        run_decode(media["root"] / "videos" / "absent.mp4", media["root"])
    expect_error(e, VideoNotFound, media["root"] / "videos" / "absent.mp4", "no such file")


# --------------------------------------------------------------------------- odd but valid video


@pytest.mark.parametrize("n", [4, 7, 12, 20])  # 4/7: sparse (seeking) decode; 12/20: sequential
def test_variable_frame_rate_picks_the_frame_on_screen(media, n):
    """Index i is the slot [i/fps, (i+1)/fps) of the average rate; its frame is the one on screen at
    the slot's middle — checked against the timestamps the file was written with."""
    video = run_decode(media["vfr"], media["root"], FrameSpec(n, drop_odd=False))
    meta = video.meta
    assert meta.num_frames == len(VFR_PTS_MS) and 5.51 < meta.duration_s <= 5.62  # last frame at 5.513 s
    middles = [(i + 0.5) / meta.fps * 1000 for i in video.indices]
    assert min(abs(t - p) for t in middles for p in VFR_PTS_MS) > 2  # unambiguous ground truth
    on_screen = [bisect.bisect_right(VFR_PTS_MS, t) - 1 for t in middles]
    assert [index_of(f) for f in video.frames] == on_screen
    assert list(video.times) == [round(i / meta.fps, 6) for i in video.indices]
    if n == 20:  # uniform in time: the 10 fps start gets fewer picks than its 10 frames
        assert sum(k < 10 for k in on_screen) < 10 < len(set(on_screen)) + 2


@pytest.mark.parametrize("deg", [90, 180, 270])
def test_rotated_video_is_shown_upright(media, deg):
    """Rotation metadata is applied before resizing: a 640×480 video rotated by 90/270 is a
    portrait 480×640 one, resized under the paper policy to 252×336 (edges rounded to 28)."""
    video = run_decode(media[f"rot{deg}"], media["root"], FrameSpec(4, max_edge=336, min_edge=None))
    assert video.meta.rotation_deg == deg
    portrait = deg in (90, 270)
    assert (video.meta.width, video.meta.height) == ((480, 640) if portrait else (640, 480))
    assert video.frames.shape[1:] == ((336, 252, 3) if portrait else (252, 336, 3))
    upright = [np.ascontiguousarray(np.rot90(f, -deg // 90)) for f in video.frames]
    assert [index_of(f) for f in upright] == list(video.indices)


def test_4k_frames_are_resized_one_at_a_time(media, monkeypatch):
    """3840×2160 frames come out at the model's size (560×315 → edges rounded to 28: 560×308), and never more than two full-resolution frames
    are alive at once (each is resized as soon as it is decoded): memory does not grow with T."""
    from vamba_eval.video import decode as dec

    alive: list[weakref.ref] = []
    most = [0]
    real_resize = dec._resize

    def spy(arr, size):
        if arr.shape[0] >= 2000:
            alive.append(weakref.ref(arr))
            most[0] = max(most[0], sum(r() is not None for r in alive))
        return real_resize(arr, size)

    monkeypatch.setattr(dec, "_resize", spy)
    for n in (12, 4):  # sequential, then seeking
        video = run_decode(media["4k"], media["root"], FrameSpec(n, max_edge=560, min_edge=256))
        assert (video.meta.width, video.meta.height) == (3840, 2160) and video.frames.shape == (n, 308, 560, 3)
        assert [index_of(f) for f in video.frames] == list(video.indices)
    assert len(alive) == 16 and most[0] <= 2


def test_one_frame_gif(media):
    for sampler in ("uniform_midpoint", "mvbench_centre"):
        video = run_decode(media["gif1"], media["root"], FrameSpec(8, sampler=sampler))
        assert video.meta.num_frames == 1 and video.indices == (0,) * 8
        assert [index_of(f) for f in video.frames] == [0] * 8


def test_video_shorter_than_the_frames_asked(media):
    """5 frames, 16 asked: the sampler's formula repeats frames (documented; never an error)."""
    video = run_decode(media["short"], media["root"], FrameSpec(16))
    assert video.indices == (0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4)
    assert [index_of(f) for f in video.frames] == list(video.indices)


# --------------------------------------------------------------------------- frame folders


def test_frame_folder_with_gaps_is_refused_naming_the_gaps(media):
    ok = run_decode(media["frames_ok"], media["root"], FrameSpec(4, sampler="mvbench_centre"), fps=3.0)
    assert [index_of(f) for f in ok.frames] == list(ok.indices)
    with pytest.raises(VideoError) as e:
        run_decode(media["frames_gaps"], media["root"], FrameSpec(4, sampler="mvbench_centre"), fps=3.0)
    expect_error(e, FrameFolderError, media["frames_gaps"], "6 images numbered 1–9",
                 "missing number(s) 3, 4, 7", "re-extract")


def test_frame_folder_with_a_repeated_number(tmp_path):
    folder = vf.write_frame_folder(tmp_path / "f", 4, ext="png", stem="")
    shutil.copy(folder / "2.png", folder / "02.png")
    with pytest.raises(VideoError) as e:
        run_decode(folder, tmp_path, fps=3.0)
    expect_error(e, FrameFolderError, folder, "number(s) 2 used twice")


# --------------------------------------------------------------------------- links and the data root


def test_symlink_loop_is_named_as_such(media, tmp_path):
    for key in ("loop", "dir_loop"):
        for cache in (None, FrameCache(tmp_path / "cache")):  # the cache fingerprints first
            with pytest.raises(VideoError) as e:
                run_decode(media[key], media["root"], cache=cache)
            expect_error(e, VideoUnreadable, media[key], "loop of symbolic links")


def test_paths_outside_the_data_root_are_refused_unread(media, monkeypatch, tmp_path):
    root, outside = media["root"], media["outside_ok"].parent
    hostile = [  # (annotation path, path the error names, text)
        (root / "videos" / ".." / ".." / "outside" / "ok.mp4", None, "leads outside the data root"),
        (media["outside_ok"], None, "leads outside the data root"),  # an absolute path
        (Path(str(root) + "/../../../../../../etc/passwd"), None, "leads outside the data root"),
        (media["link_out"], None, "symbolic link"),
        (media["link_dir_out"], None, "symbolic link (or lies under one)"),
        (media["frame_link_out"], media["frame_link_out"] / "img_4.png", "video frame is a symbolic link"),
    ]
    spy = OpenSpy(monkeypatch)
    for path, named, text in hostile:
        for cache in (None, FrameCache(tmp_path / "cache")):
            with pytest.raises(VideoError) as e:
                run_decode(path, root, cache=cache, fps=3.0)
            msg = expect_error(e, VideoOutsideDataRoot, named or path, text, "refused, not read")
            assert str(root) in msg
    assert spy.touched(outside) == [] and not any(p == "/etc/passwd" for p in spy.paths)
    assert run_decode(media["ok"], root).frames.shape[0] == 8  # the same route reads what is inside


def test_subtitle_path_outside_the_root_is_refused_when_used(media, monkeypatch):
    """A subtitle file is read only with --subtitles; then a path leaving the root is refused too
    (and the model is never asked: ``model=None`` would fail)."""
    from vamba_eval.registry import get_task
    from vamba_eval.run.process import run_unit

    subs = media["outside_ok"].parent / "subs.json"
    subs.write_text(json.dumps([{"timestamp": [0.0, 1.0], "text": "secret"}]))
    sample = Sample("longvideobench", "s", VideoRef(str(media["ok"])), "q?", ("A. a", "B. b"), "A",
                    subtitles=str(media["root"] / "subtitles" / ".." / ".." / "outside" / "subs.json"),
                    meta={"duration_s": 4.0})
    unit = WorkUnit("longvideobench", sample, FrameSpec(4), str(media["root"]))
    spy = OpenSpy(monkeypatch)
    rec = run_unit(unit, get_task("longvideobench"), decode(unit, None), None, use_subtitles=True,
                   scoring="official", max_new_tokens=4)
    assert rec.error.type == "VideoOutsideDataRoot" and "subtitle file path leads outside" in rec.error.message
    assert spy.touched(subs.parent) == [] and rec.correct is None


def test_hub_snapshot_links_and_trusted_dirs_are_allowed(tmp_path, monkeypatch):
    """A Hugging Face cache snapshot's files are links into ../../blobs: inside. Folders listed in
    $VAMBA_EVAL_TRUSTED_DIRS may hold link targets too."""
    repo = tmp_path / "hub" / "datasets--org--bench"
    snap = repo / "snapshots" / ("ab" * 20)
    (snap / "videos").mkdir(parents=True)
    (repo / "blobs").mkdir()
    blob = vf.write_video(repo / "blobs" / "0123abcd", 10, fmt="mp4")
    os.symlink(Path("../../../blobs/0123abcd"), snap / "videos" / "v.mp4")
    check_inside_root(snap / "videos" / "v.mp4", snap)
    assert run_decode(snap / "videos" / "v.mp4", snap, FrameSpec(4)).frames.shape[0] == 4
    elsewhere = tmp_path / "bigdisk"
    elsewhere.mkdir()
    shutil.copy(blob, elsewhere / "w.mp4")
    os.symlink(elsewhere / "w.mp4", snap / "videos" / "w.mp4")
    with pytest.raises(VideoOutsideDataRoot, match=r"VAMBA_EVAL_TRUSTED_DIRS"):
        check_inside_root(snap / "videos" / "w.mp4", snap)
    monkeypatch.setenv("VAMBA_EVAL_TRUSTED_DIRS", str(elsewhere))
    check_inside_root(snap / "videos" / "w.mp4", snap)


# --------------------------------------------------------------------------- a whole run


def _release(media, tmp_path: Path) -> tuple[Path, dict[str, Optional[str]]]:
    """An LVBench repack release (one parquet row per question) over the hostile media, plus bad
    rows; returns the folder and {uid: expected error type or None (scored)}."""
    import pandas as pd

    root = media["root"]
    rel = lambda key: os.path.relpath(media[key], root)  # noqa: E731
    videos: dict[str, Optional[str]] = {
        rel("ok"): None, rel("mkv_as_mp4"): None, rel("gif_as_mp4"): None, rel("vfr"): None,
        rel("rot90"): None, rel("4k"): None, rel("gif1"): None, rel("frames_ok"): None, rel("short"): None,
        rel("truncated"): "VideoUnreadable", rel("truncated_moov"): "VideoUnreadable", rel("text"): "VideoUnreadable",
        rel("empty"): "VideoUnreadable", rel("loop"): "VideoUnreadable", rel("frames_gaps"): "FrameFolderError",
        "videos/absent.mp4": "VideoNotFound", "../outside/ok.mp4": "VideoOutsideDataRoot",
        str(media["outside_ok"]): "VideoOutsideDataRoot", rel("link_out"): "VideoOutsideDataRoot",
        "../../../../../../../../etc/passwd": "VideoOutsideDataRoot", rel("frame_link_out"): "VideoOutsideDataRoot",
    }
    if "audio" in media:
        videos[rel("audio")] = "VideoUnreadable"
    row = lambda uid, path, **kw: {"uid": uid, "question": "What is shown?", "options": ["red", "green", "blue", "grey"],  # noqa: E731
                                   "answer": "B", "question_type": "reasoning", "video_path": path, **kw}
    rows, expected = [], {}
    for i, (path, err) in enumerate(videos.items()):
        rows.append(row(100 + i, path))
        expected[str(100 + i)] = err
    rows += [row(900, rel("ok"), answer="E"), row(901, rel("ok"), options=["red", "green", "blue"]),
             row(902, rel("ok"), question=None)]
    expected.update({"900": "DataError", "901": "DataError", "902": "DataError"})
    pd.DataFrame(rows).to_parquet(root / "lvbench_repack.parquet")
    return root, expected


def test_end_to_end_run_over_hostile_media(media, tmp_path, tmp_path_factory, monkeypatch):
    from vamba_eval import evaluate

    root, expected = _release(media, tmp_path)
    out = tmp_path / "run"
    spy = OpenSpy(monkeypatch)
    with cache_env(tmp_path_factory.mktemp("cache")):
        res = evaluate(tasks="lvbench", data_dir={"lvbench": str(root)}, output=str(out), progress=False,
                       frames=8, max_edge=224, min_edge=28)
    recs = {r["sample_id"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    assert set(recs) == set(expected)
    got = {sid: (r["error"] or {}).get("type") for sid, r in recs.items()}
    assert got == expected
    for sid, err in expected.items():
        r = recs[sid]
        if err is None:
            assert r["response"] is not None and r["correct"] is not None and len(r["frame_indices"]) == 8
        else:
            assert r["correct"] is None and r["response"] is None and r["error"]["message"]
    n_failed = sum(e is not None for e in expected.values())
    lv = res.tasks["lvbench"]
    assert (lv.n, lv.n_failed, lv.n_scored) == (len(expected), n_failed, len(expected) - n_failed)
    assert json.loads((out / "results.json").read_text())["tasks"]["lvbench"]["n_failed"] == n_failed
    datasets = json.loads((out / "config.json").read_text())["environment"]["datasets"]
    assert datasets["lvbench"]["n_bad_records"] == 3 and datasets["lvbench"]["n_samples"] == len(expected)
    by_video = {r["video"]: r for r in recs.values()}
    assert by_video["videos/4k.mp4"]["frame_size"] == [224, 112]  # 224×126, rounded to 28
    assert by_video["videos/rot90.mp4"]["frame_size"] == [168, 224]  # portrait after rotation
    assert by_video["videos/short.mp4"]["frame_indices"] == [0, 0, 1, 2, 2, 3, 4, 4]
    assert re.search(r"lvbench_repack\.parquet: row \d+ \(uid 900\): answer 'E' is not one of A, B, C, D\. Fix", recs["900"]["error"]["message"])
    assert "lvbench_repack.parquet: row" in recs["901"]["error"]["message"]
    assert spy.touched(media["outside_ok"].parent) == []
    report = (out / "report.html").read_text()
    counts: dict[str, int] = {}
    for err in expected.values():
        if err:
            counts[err] = counts.get(err, 0) + 1
    for err, k in counts.items():
        assert f"<strong>{err}</strong> · {k} sample{'s' if k != 1 else ''}" in report
    assert f'<td class="num bad">{n_failed}</td>' in report
