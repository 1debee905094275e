"""Tests of the video layer: sampling formulas, resize policy, decoding exactness (frames carry
their own index, see tests/video_fixtures.py), errors, the frame cache and prefetching."""

from __future__ import annotations

import pickle
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import video_fixtures as vf  # noqa: E402

from vamba_eval.video import (  # noqa: E402
    FrameCache,
    FrameFolderError,
    FrameSpec,
    VideoError,
    VideoMeta,
    VideoNotFound,
    VideoUnreadable,
    apply_odd_rule,
    decode_frames,
    frame_times,
    load_frames,
    mvbench_centre,
    prefetch,
    probe,
    probe_frame_folder,
    sample_indices,
    target_size,
    uniform_midpoint,
)


def _meta(n: int, fps: float = 10.0, kind: str = "file", path: str = "v.mp4") -> VideoMeta:
    return VideoMeta(path, n, fps, n / fps, 64, 48, 0, kind)


def _official_get_index(bound, fps, max_frame, first_idx, num_segments):
    """The official MVBench get_index, verbatim in logic, as the oracle."""
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)]


def _indices_of(frames: np.ndarray) -> list[int]:
    return [vf.read_index(f) for f in frames]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    out = {
        "long_gop": vf.write_video(d / "long_gop.mp4", 300, fps=10, gop=30),
        "ts": vf.write_video(d / "offset.ts", 60, fps=10, gop=30),
        "mkv": vf.write_video(d / "clip.mkv", 40, fps=10, gop=12),
        "rot": vf.write_video(d / "rot.mp4", 12, fps=10, rotation=90),
        "faststart": vf.write_video(d / "fs.mp4", 200, fps=10, gop=30, faststart=True),
        "gif": vf.write_gif(d / "anim.gif", 20),
        "folder": vf.write_frame_folder(d / "frames", 12),
    }
    return out


# --------------------------------------------------------------------------- sampling


def test_uniform_midpoint_whole_video():
    # seg = 100/8 = 12.5; floor(12.5 * (i + 0.5))
    assert uniform_midpoint(_meta(100), 8) == [6, 18, 31, 43, 56, 68, 81, 93]


def test_uniform_midpoint_window_and_short_video():
    # [5 s, 10 s] at 10 fps: frames 50..99, seg = 12.5
    assert uniform_midpoint(_meta(300), 4, 5.0, 10.0) == [56, 68, 81, 93]
    # more frames asked than exist: repeats, no crash
    assert uniform_midpoint(_meta(3), 6) == [0, 0, 1, 1, 2, 2]
    # empty window: its first frame, n times; windows are clipped to the video
    assert uniform_midpoint(_meta(100), 3, 4.0, 4.0) == [40, 40, 40]
    assert uniform_midpoint(_meta(100), 2, 50.0, 60.0) == [99, 99]


def test_mvbench_centre_hand_computed():
    # max_frame 9, seg 2.25: int(1.125 + round(2.25 i)); round(4.5) = 4 (half to even)
    assert mvbench_centre(_meta(10), 4) == [1, 3, 5, 8]
    # bound [2 s, 6 s] at 10 fps: start 20, end 60, seg 10
    assert mvbench_centre(_meta(300), 4, (2.0, 6.0)) == [25, 35, 45, 55]
    # frame folder: first_idx 1, max_frame = N; official 1-based [4, 11, 18, 26] -> 0-based
    assert mvbench_centre(_meta(30, 3.0, kind="frames"), 4) == [3, 10, 17, 25]
    # GIF: the official reader uses fps 25 for the bound whatever the file says
    assert mvbench_centre(_meta(100, 10.0, path="x.gif"), 4, (1.0, 2.0)) == [28, 34, 40, 47]


@pytest.mark.parametrize("n_frames,fps,bound,n", [
    (1000, 30.0, None, 16), (37, 25.0, None, 16), (5, 30.0, None, 16),
    (3000, 29.97, (12.3, 40.1), 16), (450, 15.0, (0.0, 10.0), 8), (200, 24.0, (3.7, 5.2), 16),
])
def test_mvbench_centre_matches_official(n_frames, fps, bound, n):
    expected = _official_get_index(bound, fps, n_frames - 1, 0, n)
    assert mvbench_centre(_meta(n_frames, fps), n, bound) == [min(i, n_frames - 1) for i in expected]
    folder = _official_get_index(bound, fps, n_frames, 1, n)
    got = mvbench_centre(_meta(n_frames, fps, kind="frames"), n, bound)
    assert got == [min(i, n_frames) - 1 for i in folder]


def test_sample_indices_dispatch_and_unknown_sampler():
    meta = _meta(300)
    assert sample_indices(meta, FrameSpec(4, "uniform_midpoint"), 5.0, 10.0) == [56, 68, 81, 93]
    assert sample_indices(meta, FrameSpec(4, "mvbench_centre"), 2.0, 6.0) == [25, 35, 45, 55]
    with pytest.raises(ValueError, match="mvbench_centre.*uniform_midpoint"):
        FrameSpec(4, "random")
    spec = FrameSpec(512, max_edge=480, min_edge=256)
    assert spec.key() == FrameSpec(512, max_edge=480, min_edge=256).key()
    assert spec.key() != FrameSpec(512, max_edge=480, min_edge=256, drop_odd=False).key()


def test_target_size():
    assert target_size(1920, 1080, 480, 256) == (476, 280)  # 480x270 -> multiples of 28
    assert target_size(1080, 1920, 480, 256) == (280, 476)
    assert target_size(640, 360, 560, 256) == (560, 308)
    assert target_size(320, 180, 480, 256) == (448, 252)  # scaled UP to shortest 256
    assert target_size(10, 5, None, None) == (28, 28)  # at least round_to
    assert target_size(1000, 10, 480, 256) == (25592, 252)  # min_edge wins at extreme aspect
    assert target_size(100, 100, None, None, round_to=1) == (100, 100)


def test_odd_rule_and_times():
    assert apply_odd_rule([1, 2, 3], True) == [1, 2]
    assert apply_odd_rule([1, 2, 3], False) == [1, 2, 3]
    assert apply_odd_rule([1, 2], True) == [1, 2]
    assert apply_odd_rule([7], True) == [7]  # never zero frames
    assert frame_times(_meta(100, 4.0), [0, 1, 10]) == [0.0, 0.25, 2.5]


# --------------------------------------------------------------------------- probe + decode


def test_probe_files(media):
    m = probe(media["long_gop"])
    assert (m.num_frames, m.fps, m.width, m.height, m.kind) == (300, 10.0, 64, 48, "file")
    assert m.duration_s == pytest.approx(30.0)
    assert probe(media["mkv"]).num_frames == 40  # Matroska stores no count: packets counted
    assert probe(media["ts"]).num_frames == 60
    rot = probe(media["rot"])
    assert (rot.rotation_deg, rot.width, rot.height) == (90, 48, 64)


def test_decode_sparse_seeks_mid_gop(media):
    path = media["long_gop"]  # keyframe every 30 frames, B-frames
    meta = probe(path)
    for wanted in ([0, 7, 45, 46, 149, 200, 299], [29, 31, 59, 61, 89], [44, 134, 271], [45, 3, 45, 3]):
        frames = decode_frames(path, wanted, meta)
        assert frames.shape == (len(wanted), 48, 64, 3) and frames.dtype == np.uint8
        assert _indices_of(frames) == wanted


def test_decode_sparse_really_seeks_and_groups(media, monkeypatch):
    from vamba_eval.video import decode as dec

    seeks: list[int] = []
    decoded = [0]
    orig_seek_run, orig_frames = dec._FileDecoder._seek_run, dec._FileDecoder._frames

    def seek_run(self, container, stream, target):
        seeks.append(target)
        return orig_seek_run(self, container, stream, target)

    def frames(self, container, stream):
        for frame in orig_frames(self, container, stream):
            decoded[0] += 1
            yield frame

    monkeypatch.setattr(dec._FileDecoder, "_seek_run", seek_run)
    monkeypatch.setattr(dec._FileDecoder, "_frames", frames)
    path = media["long_gop"]
    meta = probe(path)
    assert _indices_of(decode_frames(path, [250], meta)) == [250]
    assert seeks == [250] and decoded[0] < 40  # from keyframe 240, not from frame 0
    seeks.clear()
    assert _indices_of(decode_frames(path, [31, 35, 40, 200, 205], meta)) == [31, 35, 40, 200, 205]
    assert seeks == [31, 200]  # nearby frames share a seek, far ones get their own


def test_decode_random_requests_agree_with_content(media):
    rng = random.Random(0)
    for key in ("long_gop", "ts", "mkv"):  # ts: first pts is not 0 (and its seeks overshoot)
        meta = probe(media[key])
        for _ in range(6):
            wanted = [rng.randrange(meta.num_frames) for _ in range(rng.randint(1, 12))]
            assert _indices_of(decode_frames(media[key], wanted, meta)) == wanted, (key, wanted)


def test_decode_dense_sequential(media):
    meta = probe(media["long_gop"])
    wanted = list(range(1, 300, 2))  # half the frames: sequential path
    assert _indices_of(decode_frames(media["long_gop"], wanted, meta)) == wanted


def test_decode_rotation_and_resize(media):
    frames = decode_frames(media["rot"], [3, 8])
    assert frames.shape == (2, 64, 48, 3)  # displayed portrait
    assert [vf.read_index(np.rot90(f, -1)) for f in frames] == [3, 8]
    small = decode_frames(media["long_gop"], [5], size=(56, 28))
    assert small.shape == (1, 28, 56, 3)


def test_decode_gif_and_frame_folder(media):
    assert probe(media["gif"]).num_frames == 20
    assert _indices_of(decode_frames(media["gif"], [0, 5, 19, 5])) == [0, 5, 19, 5]
    meta = probe_frame_folder(media["folder"], fps=3.0)
    assert (meta.num_frames, meta.kind, meta.fps) == (12, "frames", 3.0)
    # img_1 … img_12: natural order, so position 9 is img_10 (pattern 9), not img_2
    assert _indices_of(decode_frames(media["folder"], [0, 1, 9, 11], meta)) == [0, 1, 9, 11]
    assert probe(media["folder"], folder_fps=3.0) == meta


# --------------------------------------------------------------------------- errors


def _assert_error(exc_info, cls, path: Path, text: str) -> None:
    assert type(exc_info.value) is cls
    msg = str(exc_info.value)
    assert msg.startswith(f"{path}: ") and text in msg, msg
    assert exc_info.value.path == str(path) and exc_info.value.hint


def test_errors_missing_empty_not_video(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError) as e:
        probe(missing)
    _assert_error(e, VideoNotFound, missing, "no such file")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError) as e:
        decode_frames(empty, [0])
    _assert_error(e, VideoUnreadable, empty, "0 bytes")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError) as e:
        probe(text)
    _assert_error(e, VideoUnreadable, text, "not a readable video")


def test_errors_truncated(tmp_path, media):
    data = media["long_gop"].read_bytes()
    cut = tmp_path / "cut.mp4"  # moov atom at the end: nothing left to open
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as e:
        probe(cut)
    _assert_error(e, VideoUnreadable, cut, "not a readable video")
    data = media["faststart"].read_bytes()
    cut = tmp_path / "cut_faststart.mp4"  # header intact, frames missing
    cut.write_bytes(data[: len(data) // 2])
    meta = probe(cut)
    assert meta.num_frames == 200
    with pytest.raises(VideoError) as e:
        decode_frames(cut, [0, 10, 199], meta)  # sparse: seeks past the data
    _assert_error(e, VideoUnreadable, cut, "could not decode frames [199] (1 frames)")
    with pytest.raises(VideoError) as e:
        decode_frames(cut, list(range(0, 200, 2)), meta)  # dense: sequential
    _assert_error(e, VideoUnreadable, cut, "could not decode frames [")


def test_error_truncated_matroska(tmp_path, media):
    data = media["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError) as e:
        probe(cut)
    _assert_error(e, VideoUnreadable, cut, "ends early")


def test_error_audio_only(tmp_path):
    path = vf.write_audio_only(tmp_path / "speech")
    if path is None:
        pytest.skip("no audio encoder in this PyAV build")
    with pytest.raises(VideoError) as e:
        probe(path)
    _assert_error(e, VideoUnreadable, path, "no video stream")


def test_errors_frame_folders(tmp_path):
    empty = tmp_path / "empty_frames"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(VideoError) as e:
        probe_frame_folder(empty, 3.0)
    _assert_error(e, FrameFolderError, empty, "no JPEG/PNG images")
    folder = vf.write_frame_folder(tmp_path / "broken", 4, ext="jpg")
    bad = folder / "img_3.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(VideoError) as e:
        decode_frames(folder, [0, 2], folder_fps=3.0)
    _assert_error(e, FrameFolderError, bad, "cannot read frame 2")
    with pytest.raises(VideoNotFound):
        probe_frame_folder(tmp_path / "absent", 3.0)


def test_errors_pickle():
    err = VideoUnreadable("/x/y.mp4", "broken", "Fix it.")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is VideoUnreadable and str(back) == str(err) == "/x/y.mp4: broken. Fix it."


# --------------------------------------------------------------------------- cache + load_frames


def test_load_frames_and_cache(tmp_path, media):
    cache = FrameCache(tmp_path / "cache")
    spec = FrameSpec(7, max_edge=56, min_edge=28, round_to=14)  # 7 -> odd rule -> 6 frames
    first = load_frames(media["long_gop"], spec, cache=cache)
    assert not first.from_cache
    assert first.indices == tuple(uniform_midpoint(first.meta, 7)[:6])
    assert first.frames.shape == (6, 42, 56, 3)  # 64x48 -> 56x42
    assert first.times == tuple(i / 10.0 for i in first.indices)
    second = load_frames(media["long_gop"], spec, cache=cache)
    assert second.from_cache and second.indices == first.indices and second.meta == first.meta
    np.testing.assert_array_equal(second.frames, first.frames)
    # another window is another entry; a corrupt entry is a miss, not a crash
    key = cache.key(media["long_gop"], spec, 1.0, 5.0)
    assert key != cache.key(media["long_gop"], spec) and cache.get(key) is None
    assert key == cache.key(media["long_gop"], spec, 1, 5)
    entry = cache.file_for(cache.key(media["long_gop"], spec))
    entry.write_bytes(b"garbage")
    assert not load_frames(media["long_gop"], spec, cache=cache).from_cache
    assert not [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_put_get_round_trip(tmp_path, media):
    cache = FrameCache(tmp_path / "c")
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    key = cache.key(media["gif"], FrameSpec(2), None, None)
    cache.put(key, frames, [3, 9], [0.3, 0.9])
    got_frames, got_idx, got_times = cache.get(key)
    np.testing.assert_array_equal(got_frames, frames)
    assert (got_idx, got_times) == ([3, 9], [0.3, 0.9])


def test_cache_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VAMBA_EVAL_CACHE", str(tmp_path / "here"))
    assert FrameCache().root == tmp_path / "here"
    monkeypatch.delenv("VAMBA_EVAL_CACHE")
    assert FrameCache().root == Path.home() / ".cache" / "vamba-eval" / "frames"


# --------------------------------------------------------------------------- prefetch


def test_prefetch_order_and_exceptions():
    def fn(x: int) -> int:
        time.sleep(random.Random(x).random() * 0.01)
        if x == 3:
            raise ValueError("bad video 3")
        return x * x

    out = list(prefetch(range(8), fn, workers=3, depth=4))
    assert [item for item, _ in out] == list(range(8))
    assert isinstance(out[3][1], ValueError) and str(out[3][1]) == "bad video 3"
    assert [r for i, r in out if i != 3] == [i * i for i in range(8) if i != 3]


def test_prefetch_bounded_in_flight():
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    yielded = 0
    for _item, _ in prefetch(items(), lambda x: x, workers=2, depth=3):
        assert len(pulled) - yielded <= 3
        yielded += 1
        time.sleep(0.002)  # slow consumer: the producer must not run ahead
    assert yielded == 20


def test_prefetch_stops_cleanly_when_closed():
    started = []
    release = threading.Event()

    def fn(x: int) -> int:
        started.append(x)
        release.wait(2)
        return x

    gen = prefetch(range(100), fn, workers=2, depth=4)
    release.set()
    first = next(gen)
    assert first == (0, 0)
    gen.close()
    assert len(started) <= 5  # nothing was started after closing
    assert not [t for t in threading.enumerate() if t.name.startswith("vamba-prefetch")]
    with pytest.raises(ValueError):
        prefetch([], lambda x: x, depth=0)
