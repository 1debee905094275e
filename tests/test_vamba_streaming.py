"""VAMBA's streamed prefill: the piece schedule (tail), the K/V cache grown piece by piece, states dropped."""

from __future__ import annotations

import weakref

import pytest
import torch
from transformers import DynamicCache

from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration
from vamba_eval.models.vamba.streaming import KVPieces, piece_spans, piece_vit_frames
from vamba_eval.models.vamba.tiny import tiny_vamba_config


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def tiny(seed: int = 0) -> VambaForConditionalGeneration:
    model = VambaForConditionalGeneration(VambaConfig.from_dict(tiny_vamba_config("mamba2", layers=3)))
    model.init_weights(seed)
    return model.eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:  # 24 frames = 12 temporal slices
    return torch.randint(0, 256, (24, 56, 84, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("n,per,tail,min_tail,expected", [
    (128, 16, False, 8, [16] * 8),
    (128, 16, True, 8, [16] * 7 + [8, 8]),  # the default: 256 frames in 32-frame pieces end with 16, 16 frames
    (128, 16, True, 2, [16] * 7 + [8, 4, 2, 2]),  # … or 16, 8, 4, 4
    (256, 32, True, 8, [32] * 7 + [16, 8, 8]),
    (100, 16, True, 8, [16] * 6 + [4]),  # a short last piece is cut only above the smallest piece
    (100, 16, True, 2, [16] * 6 + [2, 2]),
    (16, 16, True, 2, [16]),  # one piece: nothing to cut (the video is not streamed)
    (17, 16, True, 2, [16, 1]),
    (7, 3, True, 1, [3, 3, 1]),
])
def test_piece_spans_cover_the_video_in_order(n, per, tail, min_tail, expected):
    spans = piece_spans(n, per, tail, min_tail)
    assert [s1 - s0 for s0, s1 in spans] == expected
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_piece_spans_refuse_empty_input():
    with pytest.raises(ValueError, match="≥ 1 slice"):
        piece_spans(0, 16)
    with pytest.raises(ValueError, match="tail_min_slices"):
        piece_spans(16, 4, tail=True, min_tail=0)  # would never stop cutting


def test_short_pieces_get_short_vit_passes():
    assert piece_vit_frames(16, 32, 32, 2) == 16  # a full piece: as configured
    assert [piece_vit_frames(16, f, 32, 2) for f in (16, 8, 4)] == [8, 4, 2]
    assert piece_vit_frames(4, 16, 32, 2) == 4  # never more than configured


def test_kv_pieces_join_in_order_and_free_the_pieces():
    store = KVPieces(2)
    ks = [torch.randn(1, 2, m, 4) for m in (3, 5, 1)]
    vs = [torch.randn(1, 2, m, 4) for m in (3, 5, 1)]
    refs = [weakref.ref(t) for t in ks + vs]
    for k, v in zip(ks, vs):
        store.add(0, k, v)
        store.add(1, 2 * k, 2 * v)
    k_cat, v_cat = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
    del ks, vs, k, v
    (k0, v0), (k1, v1) = store.join()
    assert torch.equal(k0, k_cat) and torch.equal(v0, v_cat) and torch.equal(k1, 2 * k_cat) and torch.equal(v1, 2 * v_cat)
    assert k0.is_contiguous() and v1.is_contiguous()
    assert all(r() is None for r in refs)  # the pieces were let go as they were copied


def test_tail_streaming_equals_plain_streaming_and_the_reference(frames):
    model = tiny()
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(ids, frames)
    outs, counts = [], []
    model.tail_min_slices = 2
    for tail in (False, True):
        model.stream_tail = tail
        ctx = model.encode_video(frames, chunk_frames=8)  # 12 slices in pieces of 4: 4, 4, then 4 or 2, 2
        counts.append(ctx.chunks)
        assert ctx.num_tokens == ctx.grid.num_tokens == ctx.kv[0][0].shape[2]
        with torch.inference_mode():
            outs.append(model.text_step(ids, ctx, DynamicCache(), start=0, logits_to_keep=0))
    assert counts == [3, 4]
    assert rel(outs[0], ref) < 1e-5 and rel(outs[1], ref) < 1e-5


def test_auto_tail_only_where_pieces_are_the_smallest_auto_piece():
    model = tiny()
    assert [model.tail_for(n) for n in (64, 65, 256, 511, 512, 1024)] == [False, True, True, True, False, False]
    assert not model.tail_for(256, chunk_frames=32)  # an explicit piece size: as asked
    model.stream_tail = True
    assert model.tail_for(1024) and model.tail_for(256, chunk_frames=32)


def test_the_last_piece_drops_each_layers_state_once_used(frames, monkeypatch):
    """The K/V grows piece by piece, and after the last piece has passed layer i its SSM state is let go: while
    a later layer of the last piece runs, the earlier layers' states are dead."""
    model = tiny()
    states, dead_at_last_layer = [], []
    update0, update1 = model.layers[0].video_update, model.layers[1].video_update

    def record(v, state=None):
        out = update0(v, state)
        states.append(weakref.ref(out[1].ssm_state))
        return out

    def check(v, state=None):
        dead_at_last_layer.append(states[-1]() is None)
        return update1(v, state)

    monkeypatch.setattr(model.layers[0], "video_update", record)
    monkeypatch.setattr(model.layers[1], "video_update", check)
    model.stream_tail = False
    model.encode_video(frames, chunk_frames=8)  # 3 pieces
    assert dead_at_last_layer == [False, False, True]


def test_pixel_normalisation_is_made_once_per_device():
    from vamba_eval.models.vamba.vision import IMAGE_MEAN, IMAGE_STD, normalisation

    mean, std = normalisation(torch.device("cpu"))
    assert normalisation(torch.device("cpu"))[0] is mean  # cached: no host-to-GPU copy per ViT pass
    assert mean.flatten().tolist() == pytest.approx(IMAGE_MEAN) and std.flatten().tolist() == pytest.approx(IMAGE_STD)


# ------------------------------------------------------------------ GPU (pytest -m gpu)


@pytest.mark.gpu
def test_streamed_prefill_never_makes_the_host_wait_for_the_gpu(frames):
    """No synchronising op from pinned frames to the last-token logits: a sync drains the launch queue, so the
    host's per-layer work would add to the GPU's time (it did twice per ViT pass, benchmarks/sync_check.py)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from vamba_eval.models.vamba.backends import select_backend

    model = tiny().to("cuda", torch.bfloat16)
    model.set_ssm_backend(select_backend(None, torch.device("cuda")))
    pinned = frames.pin_memory()
    ids = torch.randint(0, 256, (1, 9), device="cuda")
    model.stream_tail, model.tail_min_slices = True, 2
    model.encode_video(pinned, chunk_frames=8)  # warm-up: kernels, the cached pixel mean/std
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ctx = model.encode_video(pinned, chunk_frames=8)
        with torch.inference_mode():
            model.text_step(ids, ctx, DynamicCache(), start=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
