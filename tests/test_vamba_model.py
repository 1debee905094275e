"""VAMBA model: config, official keys, streaming exactness, checkpoint I/O, variants, decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vamba_eval.models.meta import params_on_meta
from vamba_eval.models.tokenizer import build_byte_tokenizer, special_token_ids
from vamba_eval.models.vamba.checkpoint import CheckpointError, from_pretrained, save_pretrained
from vamba_eval.models.vamba.config import ConfigError, VambaConfig
from vamba_eval.models.vamba.convert import VARIANTS, vamba_from_qwen2vl
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration
from vamba_eval.models.vamba.tiny import TINY_TOKEN_IDS, VAMBA_7B, tiny_qwen2vl_config, tiny_vamba_config
from vamba_eval.models.vamba.vision import FrameError, patchify


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def tiny(mixer: str = "mamba2", seed: int = 0, **overrides) -> VambaForConditionalGeneration:
    raw = {**tiny_vamba_config(mixer, layers=3), **overrides}
    model = VambaForConditionalGeneration(VambaConfig.from_dict(raw))
    model.init_weights(seed)
    return model.eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 56, 84, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 256, (1, 11), generator=torch.Generator().manual_seed(2))


# --- config -------------------------------------------------------------------------------
def test_config_round_trip_keeps_unknown_keys(tmp_path):
    raw = {**VAMBA_7B, "some_future_key": {"x": [1, 2]}}
    cfg = VambaConfig.from_dict(raw)
    cfg.save(tmp_path)
    back = json.loads((tmp_path / "config.json").read_text())
    assert back["some_future_key"] == {"x": [1, 2]}
    assert back["vision_mamba_mixer_config"]["d_state"] == 128
    assert VambaConfig.from_file(tmp_path).to_dict() == cfg.to_dict()
    assert cfg.mixer_type == "mamba2"  # inferred from enable=True


@pytest.mark.parametrize("key,value,needle", [
    ("use_alpha_balancing", "yes", "use_alpha_balancing"),
    ("hidden_size", "3584", "hidden_size"),
    ("mixer_type", "mamba3", "mixer_type"),
])
def test_config_rejects_wrong_types(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        VambaConfig.from_dict({**VAMBA_7B, key: value})


def test_config_rejects_bad_mixer_field_and_contradiction():
    bad = {**VAMBA_7B, "vision_mamba_mixer_config": {**VAMBA_7B["vision_mamba_mixer_config"], "d_state": -1}}
    with pytest.raises(ConfigError, match="d_state"):
        VambaConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="contradicts"):
        VambaConfig.from_dict({**VAMBA_7B, "mixer_type": "none"})


# --- the 7B as released ----------------------------------------------------------------------
def test_7b_official_keys_shapes_and_param_count():
    with params_on_meta():
        model = VambaForConditionalGeneration(VambaConfig.from_dict(VAMBA_7B))
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(v.numel() for v in model.parameters()) == 11_309_837_020
    p = "model.layers.5.vision_mixer.mixer."
    assert state[p + "in_proj.weight"] == (14704, 3584)
    assert state[p + "conv1d.weight"] == (7424, 1, 4)
    assert state[p + "out_proj.weight"] == (3584, 7168)
    assert state["model.layers.5.alpha"] == (1,)
    assert state["model.layers.5.cross_attn.k_proj.weight"] == (512, 3584)
    assert state["visual.merger.mlp.2.weight"] == (3584, 5120)
    assert {k.split(".")[0] for k in state} == {"visual", "model", "lm_head"}
    cross = sum(v.numel() for k, v in model.named_parameters() if ".cross_attn." in k)
    mixer = sum(v.numel() for k, v in model.named_parameters() if ".vision_mixer." in k)
    assert cross == 28 * 29_364_736 and mixer == 28 * 78_437_456


def test_tiny_token_ids_match_tokenizer():
    assert special_token_ids(build_byte_tokenizer()) == TINY_TOKEN_IDS


# --- streaming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", ["mamba2", "mamba1", "none"])
@pytest.mark.parametrize("flags", [{}, {"cross_attn_use_layer_norm": True, "cross_attn_use_position_embeddings": True}])
def test_streamed_prefill_equals_unchunked_reference(mixer, flags, frames, ids):
    model = tiny(mixer, **flags)
    with torch.no_grad():
        ref = model(ids, frames)  # both streams layer by layer, no streaming
    for chunk in (2, 4, 6, 8):
        ctx = model.encode_video(frames, chunk_frames=chunk)
        with torch.inference_mode():
            from transformers import DynamicCache

            out = model.text_step(ids, ctx, DynamicCache(), start=0, logits_to_keep=0)
        assert ctx.chunks == -(-8 // max(2, chunk - chunk % 2))
        assert rel(out, ref) < 1e-5


def test_cross_attention_reads_the_stream_before_the_mixer(frames):
    model = tiny("mamba2")
    ctx = model.encode_video(frames)
    with torch.no_grad():
        v0, _ = model.video_stream(frames)
        layer0 = model.layers[0]
        k_pre, _ = layer0.cross_attn.project_kv(v0)
        v1, _ = layer0.video_update(v0)
        k_post, _ = layer0.cross_attn.project_kv(v1)
        k1_expected, _ = model.layers[1].cross_attn.project_kv(v1)
    assert rel(ctx.kv[0][0], k_pre) < 1e-6  # layer 0 attends to the pre-Mamba stream …
    assert rel(ctx.kv[0][0], k_post) > 1e-3  # … which the mixer really changes
    assert rel(ctx.kv[1][0], k1_expected) < 1e-6  # layer 1 attends to layer 0's update


def test_last_layer_mixer_is_skipped(frames):
    model = tiny("mamba2")
    calls = []
    model.layers[-1].vision_mixer.register_forward_hook(lambda *a: calls.append(1))
    model.encode_video(frames, chunk_frames=2)
    assert calls == []


def test_vit_pieces_equal_one_vit_pass(frames, ids):
    """``vit_chunk_frames`` splits the ViT inside a streamed piece: same tokens, several ViT passes."""
    model = tiny("mamba2")
    from transformers import DynamicCache

    outs, passes = [], []
    for vit in (64, 2, 4):
        model.vit_chunk_frames = vit
        calls = []
        handle = model.visual.merger.register_forward_hook(lambda *a: calls.append(1))
        ctx = model.encode_video(frames, chunk_frames=8)
        handle.remove()
        with torch.inference_mode():
            outs.append(model.text_step(ids, ctx, DynamicCache(), start=0, logits_to_keep=0))
        passes.append(len(calls))
    assert passes == [1, 4, 2]
    assert rel(outs[1], outs[0]) < 1e-5 and rel(outs[2], outs[0]) < 1e-5
    with torch.no_grad():
        model.vit_chunk_frames = 3  # rounded down to the temporal patch (2 frames)
        v_odd, grid = model.video_stream(frames[:7])  # 7 frames: the last repeated, as Qwen2-VL does
        model.vit_chunk_frames = 64
        v_one, grid_one = model.video_stream(frames[:7])
    assert grid == grid_one and grid.t == 4
    assert rel(v_odd, v_one) < 1e-5


def test_streaming_holds_neither_pixels_nor_the_last_stream_through_the_vit(frames, monkeypatch):
    """While a ViT pass runs its blocks, its pixels (made for the patch embedding) and the previous streamed
    piece's final video stream are already freed: at 7B they were 22 MB and 34 MB of the 256-frame peak."""
    import weakref

    from vamba_eval.models.vamba import vision

    model = tiny("mamba2")
    pixels, streams, alive = [], [], []
    embed = vision.patch_embed

    def embed_recording(module, px):
        pixels.append(weakref.ref(px))
        return embed(module, px)

    update = model.layers[-2].video_update  # the last layer whose output is the stream

    def update_recording(v, state=None):
        out = update(v, state)
        streams.append(weakref.ref(out[0]))
        return out

    block_fn = model._block_fn

    def block_checking(*args):
        alive.append(any(r() is not None for r in pixels + streams))
        return block_fn(*args)

    monkeypatch.setattr(vision, "patch_embed", embed_recording)
    monkeypatch.setattr(model.layers[-2], "video_update", update_recording)
    model._block_fn = block_checking
    model.vit_chunk_frames = 2
    model.encode_video(frames, chunk_frames=4)  # 2 pieces × 2 ViT passes
    assert len(pixels) == 4 and len(streams) == 2 and alive and not any(alive)


@pytest.mark.parametrize("total,expected", [(8, 8), (64, 64), (65, 32), (256, 32), (511, 32), (512, 64),
                                            (1024, 64), (3600, 64)])
def test_auto_chunk_keeps_pieces_small_next_to_the_video(total, expected):
    from vamba_eval.models.vamba.modeling import auto_chunk_frames

    assert auto_chunk_frames(total) == expected
    model = tiny("mamba2")
    assert model.chunk_frames_for(total) == expected
    assert model.chunk_frames_for(total, 6) == 6  # an explicit chunk wins
    model.chunk_frames = 32  # a fixed chunk (--chunk-frames), at every length
    assert model.chunk_frames_for(total) == 32


@pytest.mark.parametrize("piece,expected", [(2, 8), (16, 8), (32, 16), (64, 32), (128, 32)])
def test_auto_vit_piece_is_half_the_streamed_piece(piece, expected, frames):
    from vamba_eval.models.vamba.modeling import auto_vit_chunk_frames

    assert auto_vit_chunk_frames(piece) == expected
    model = tiny("mamba2")
    calls = []
    model.visual.merger.register_forward_hook(lambda *a: calls.append(1))
    model.encode_video(torch.cat([frames] * 4), chunk_frames=32)  # 32 frames, one piece: 2 ViT passes of 16
    assert calls == [1, 1]


def test_released_last_mixer_changes_nothing_but_memory(tmp_path, frames, ids):
    from transformers import DynamicCache

    model = tiny("mamba2")
    with torch.no_grad():
        ref = model(ids, frames)
    before = model.encode_video(frames, chunk_frames=4)
    n_params = sum(p.numel() for p in model.parameters())
    released = model.release_unused_video_mixer()
    assert released > 0 and sum(p.numel() for p in model.parameters()) == n_params - released
    assert not any(k.startswith("model.layers.2.vision_mixer") for k in model.state_dict())
    assert model.layers[1].vision_mixer is not None and model.release_unused_video_mixer() == 0
    after = model.encode_video(frames, chunk_frames=4)
    for (k0, v0), (k1, v1) in zip(before.kv, after.kv):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    with torch.no_grad():
        assert torch.equal(model(ids, frames), ref)
    with torch.inference_mode():
        out = model.text_step(ids, after, DynamicCache(), start=0, logits_to_keep=0)
    assert rel(out, ref) < 1e-5
    with pytest.raises(CheckpointError, match="load it again with from_pretrained"):
        save_pretrained(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_adapter_releases_the_unused_mixer_and_reports_the_stored_size():
    from vamba_eval.models.base import ModelSpec, count_params
    from vamba_eval.models.vamba_adapter import VambaAdapter

    adapter = VambaAdapter(ModelSpec(name="vamba"))
    assert adapter.model.layers[-1].vision_mixer is None and adapter.model.layers[0].vision_mixer is not None
    desc = adapter.describe()
    assert desc["params"] > count_params(adapter.model)  # the checkpoint's size, not what is left in memory
    assert desc["chunk_frames"] == "auto" and desc["vit_chunk_frames"] == "auto"


# --- alpha --------------------------------------------------------------------------------------
def test_alpha_is_clamped(frames, ids):
    model = tiny("mamba2")
    with torch.no_grad():
        for layer in model.layers:
            layer.alpha.fill_(1.7)
        high = model(ids, frames)
        for layer in model.layers:
            layer.alpha.fill_(1.0)
        one = model(ids, frames)
        for layer in model.layers:
            layer.alpha.fill_(-3.0)
        low = model(ids, frames)
        for layer in model.layers:
            layer.alpha.fill_(0.0)
        zero = model(ids, frames)
    assert torch.equal(high, one) and torch.equal(low, zero)
    model.train()
    model(ids, frames)
    assert all(float(layer.alpha) == 0.0 for layer in model.layers)  # training clamps in place (official)


def test_alpha_one_is_the_qwen2vl_text_model(ids):
    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**tiny_qwen2vl_config())).eval()
    model = vamba_from_qwen2vl(qwen, "random", "mamba2").eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.alpha.fill_(1.0)
        expected = qwen(input_ids=ids).logits
        got = model(ids, torch.zeros(2, 28, 28, 3, dtype=torch.uint8))
    assert rel(got, expected) < 1e-5


# --- conversion ----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_build_and_run(variant, frames, ids):
    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**tiny_qwen2vl_config())).eval()
    ca_init, mixer = VARIANTS[variant]
    model = vamba_from_qwen2vl(qwen, ca_init, mixer).eval()
    assert model.config.mixer_type == mixer
    sa, ca = model.layers[0].self_attn.q_proj.weight, model.layers[0].cross_attn.q_proj.weight
    assert torch.equal(sa, ca) == (ca_init == "self_attn")
    assert torch.equal(model.model.embed_tokens.weight, qwen.model.language_model.embed_tokens.weight)
    assert torch.equal(model.visual.blocks[0].attn.qkv.weight, qwen.model.visual.blocks[0].attn.qkv.weight)
    if mixer == "mamba1":
        assert model.layers[0].vision_mixer.mixer.A_log.shape[1] == 16
    assert (model.layers[0].vision_mixer is None) == (mixer == "none")
    with torch.no_grad():
        assert torch.isfinite(model(ids, frames)).all()


# --- checkpoint I/O ------------------------------------------------------------------------------
def test_save_load_round_trip_sharded(tmp_path, frames, ids):
    model = tiny("mamba2")
    save_pretrained(model, tmp_path, max_shard_bytes=300_000)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    loaded = from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(ids, frames), model(ids, frames))
    assert loaded.ssm_backend.name == "torch"


def _saved(tmp_path, mixer="mamba2"):
    save_pretrained(tiny(mixer), tmp_path)
    return tmp_path


def test_strict_load_names_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _saved(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state.pop("model.layers.1.cross_attn.o_proj.weight")
    state["model.layers.1.extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        from_pretrained(folder)
    assert "model.layers.1.cross_attn.o_proj.weight" in str(err.value)
    assert "model.layers.1.extra.weight" in str(err.value)


def test_d_state_mismatch_is_a_clear_error(tmp_path):
    folder = _saved(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_mamba_mixer_config"]["d_state"] = 8  # weights were made with 16
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="d_state"):
        from_pretrained(folder)


def test_missing_shard_and_wrong_dtype(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny("mamba2")
    save_pretrained(model, tmp_path / "sharded", max_shard_bytes=300_000)
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="model-00002"):
        from_pretrained(tmp_path / "sharded")
    folder = _saved(tmp_path / "dtype")
    state = load_file(str(folder / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="int32"):
        from_pretrained(folder)


# --- inference ------------------------------------------------------------------------------------
def test_generation_is_deterministic_and_skips_mixers(frames, ids):
    model = tiny("mamba2")
    ctx = model.encode_video(frames)
    calls = {"mixer": 0, "kv": 0}
    for layer in model.layers:
        layer.vision_mixer.register_forward_hook(lambda *a: calls.__setitem__("mixer", calls["mixer"] + 1))
        layer.cross_attn.k_proj.register_forward_hook(lambda *a: calls.__setitem__("kv", calls["kv"] + 1))
    a, _ = model.generate(ids, ctx, max_new_tokens=6)
    b, _ = model.generate(ids, ctx, max_new_tokens=6)
    assert a == b and len(a) == 6
    assert calls == {"mixer": 0, "kv": 0}  # decoding reuses the cached cross-attn K/V
    with torch.no_grad():  # the cached decode agrees with a full recompute
        full = model(torch.cat([ids, torch.tensor([a[:-1]])], dim=1), frames)
    assert full[0, ids.shape[1] - 1:].argmax(-1).tolist() == a


def test_bad_frames_are_rejected_early():
    model = tiny("none")
    with pytest.raises(FrameError, match="zero frames"):
        model.encode_video(torch.zeros(0, 56, 56, 3, dtype=torch.uint8))
    with pytest.raises(FrameError, match="multiple of 28"):
        model.encode_video(torch.zeros(2, 50, 56, 3, dtype=torch.uint8))
    with pytest.raises(FrameError, match=r"\[T, H, W, 3\]"):
        model.encode_video(torch.zeros(2, 3, 56, 56, dtype=torch.uint8))


def test_patchify_matches_the_transformers_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    img = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    expected = Qwen2VLImageProcessorPil()(images=[img], return_tensors="pt", do_resize=False)
    got, grid = patchify(torch.from_numpy(img)[None])  # one frame → repeated to the temporal patch
    assert [grid.t, grid.h, grid.w] == expected["image_grid_thw"][0].tolist()
    assert rel(got, expected["pixel_values"]) < 1e-6


def test_batched_vision_path_equals_the_transformers_tower():
    from vamba_eval.models.vamba.vision import encode_frames, run_vision_tower

    model = tiny("none")
    frames = torch.randint(0, 256, (6, 84, 112, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    pixels, grid = patchify(frames)
    with torch.no_grad():
        ref = run_vision_tower(model.visual, pixels, grid.thw())
        got = encode_frames(model.visual, pixels, grid)
    assert got.shape == ref.shape == (grid.num_tokens, 64)
    assert rel(got, ref) < 1e-6


def test_split_compiled_vit_block_equals_the_tower(monkeypatch):
    """VAMBA_EVAL_VIT_SPLIT_COMPILE=1: compile_video_path compiles the block's two halves (not the attention
    between them); the halves recombine to the tower's function."""
    from vamba_eval.models.vamba import modeling
    from vamba_eval.models.vamba.vision import block_out, block_qkv, encode_frames, run_vision_tower, split_block_fn

    model = tiny("none")
    frames = torch.randint(0, 256, (6, 84, 112, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    pixels, grid = patchify(frames)
    compiled = []
    fake_compile = lambda f, **kw: compiled.append(f) or f  # noqa: E731  (records what would be compiled)
    with torch.no_grad():
        got = encode_frames(model.visual, pixels, grid, split_block_fn(fake_compile))
        assert rel(got, run_vision_tower(model.visual, pixels, grid.thw())) < 1e-6
    assert compiled == [block_qkv, block_out]
    compiled.clear()
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setenv(modeling.SPLIT_COMPILE_ENV, "1")
    model.compile_video_path()
    assert compiled[:2] == [block_qkv, block_out]


def test_vit_sdpa_backends_env_override(monkeypatch):
    from vamba_eval.models.vamba.vision import VIT_SDPA_ENV, encode_frames, run_vision_tower

    model = tiny("none")
    frames = torch.randint(0, 256, (4, 56, 56, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    pixels, grid = patchify(frames)
    monkeypatch.setenv(VIT_SDPA_ENV, "math")
    with torch.no_grad():
        assert rel(encode_frames(model.visual, pixels, grid), run_vision_tower(model.visual, pixels, grid.thw())) < 1e-6
    monkeypatch.setenv(VIT_SDPA_ENV, "flash,cudnnn")
    with pytest.raises(ValueError, match="cudnnn.*comma list"):
        encode_frames(model.visual, pixels, grid)
