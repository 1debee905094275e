"""Differentiable batched forwards for training, and the two losses.

``student_logits`` is ``VambaForConditionalGeneration.forward`` for a batch of different videos
(the reference forward takes one video): the frames of all videos go through the ViT at once —
its attention never crosses a 2-frame slice, so concatenating videos along time is exact — and
the per-video token blocks are then stacked as the batch of the video stream.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
import torch.nn.functional as F

from vamba_eval.models.vamba.vision import VideoGrid, encode_frames, patchify
from vamba_eval.train.batches import (IGNORE, Batch, check_even, teacher_inputs, teacher_position_ids,
                                      video_token_count)


def batch_pixels(frames: torch.Tensor, vision_cfg: Any) -> tuple[torch.Tensor, Any]:
    """uint8 [b, T, H, W, 3] → (patches of all videos, grid with t = b·T/temporal)."""
    check_even(frames, vision_cfg.temporal_patch_size)
    b, t, h, w, c = frames.shape
    return patchify(frames.reshape(b * t, h, w, c), vision_cfg.patch_size, vision_cfg.temporal_patch_size,
                    vision_cfg.spatial_merge_size)


def student_logits(model: Any, batch: Batch, stats: Optional[dict[str, torch.Tensor]] = None,
                   keep_layer: int = 0) -> torch.Tensor:
    """VAMBA logits [b, L, V] for a batch of (text, video) pairs; ``stats["video"]``: the layer-0 video stream;
    ``keep_layer`` = k > 0: ``stats["layer"]`` is the text stream [b, L, d] after the first k decoder layers
    (with ``stats``, every layer's is kept as ``stats["layer{k}"]`` too: references, no copies)."""
    vcfg = model.hf_config.vision_config
    pixels, grid = batch_pixels(batch.frames, vcfg)
    tokens = encode_frames(model.visual, pixels, grid, model._block_fn)  # [b·M, d]
    b = batch.ids.shape[0]
    v = tokens.reshape(b, -1, tokens.shape[-1])
    if stats is not None:
        stats["video"] = v
    h = model.model.embed_tokens(batch.ids)
    pe, q_rope = model._text_rope(h, 0)
    one = VideoGrid(grid.t // b, grid.h, grid.w, grid.merge)  # every video of the batch has the same grid
    v_rope = model._video_rope(v, one, 0, one.t)  # None unless cross_attn_use_position_embeddings
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        h, v = layer(h, v, pe, video_rope=v_rope, q_rope=q_rope, update_video=i < last)
        if stats is not None:
            stats[f"layer{i + 1}"] = h
            if i + 1 == keep_layer:
                stats["layer"] = h
    return model.lm_head(model.model.norm(h))


def teacher_forward(model: Any, batch: Batch, video_pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Qwen2-VL logits [b, L + N, V], its labels, and N (video tokens per sample)."""
    vcfg = model.config.vision_config
    n = video_token_count(batch.frames[0], vcfg)
    ids, mask, labels = teacher_inputs(batch, n, video_pad)
    pixels, _ = batch_pixels(batch.frames, vcfg)
    t, h, w = batch.frames.shape[1:4]
    grid = (t // vcfg.temporal_patch_size, h // vcfg.patch_size, w // vcfg.patch_size)
    thw = torch.tensor([grid] * ids.shape[0], device=ids.device)
    merge = vcfg.spatial_merge_size
    extra = {}
    if _takes_token_types(model):  # transformers ≥ 5.2x computes M-RoPE from them
        extra["mm_token_type_ids"] = (ids == video_pad).int() * 2
    # our vectorised M-RoPE ids: transformers' own computation loops over the rows in Python
    # (~2/3 of a teacher step at batch 128); checked against it once per model
    pos = teacher_position_ids(batch, mask, (grid[0], grid[1] // merge, grid[2] // merge))
    # the ViT as ONE video of b·t frames (its attention never crosses a 2-frame slice and its rotary ids
    # depend on (h, w) only: the same features, in the same order), so transformers' per-video Python
    # loops run once instead of b times (~60 GPU ops per row: most of a step at batch 128)
    joined = torch.tensor([[grid[0] * ids.shape[0], grid[1], grid[2]]], device=ids.device)
    pixels = pixels.to(model.dtype)
    if not getattr(model, "_vamba_rope_checked", False):
        _check_rope(model, ids, mask, thw, pos, extra)
        _check_joined(model, ids, mask, pos, pixels, thw, joined, extra)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values_videos=pixels,
                video_grid_thw=joined, **extra)
    return out.logits, labels, n


def _check_joined(model: Any, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, pixels: torch.Tensor,
                  thw: torch.Tensor, joined: torch.Tensor, extra: dict[str, Any]) -> None:
    """Once per model: the joined-video call gives the per-video call's logits (this transformers version)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            per_video = model(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values_videos=pixels,
                              video_grid_thw=thw, **extra).logits.float()
            one = model(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values_videos=pixels,
                        video_grid_thw=joined, **extra).logits.float()
    finally:
        model.train(was)
    err = float((one - per_video).abs().max() / per_video.abs().max().clamp(min=1e-6))
    if err > 1e-2:
        raise RuntimeError(f"this transformers version's Qwen2-VL gives different logits for the batch's videos "
                           f"as one joined video (max rel. error {err:.2e}); train/forward.teacher_forward "
                           "relies on it — pass per-video video_grid_thw there")


def _check_rope(model: Any, ids: torch.Tensor, mask: torch.Tensor, thw: torch.Tensor, pos: torch.Tensor,
                extra: dict[str, Any]) -> None:
    inner = model.model
    with torch.no_grad():
        if hasattr(inner, "compute_3d_position_ids"):
            params = inspect.signature(inner.compute_3d_position_ids).parameters  # the cache keyword was renamed
            cache = {"cache": None} if "cache" in params else {"past_key_values": None}
            ref = inner.compute_3d_position_ids(input_ids=ids, image_grid_thw=None, video_grid_thw=thw,
                                                inputs_embeds=None, attention_mask=mask, **cache, **extra)
        else:
            ref = inner.get_rope_index(ids, None, thw, mask)[0]
    real = mask.bool()[None].expand_as(pos)
    if ref.shape != pos.shape or not torch.equal(ref[real], pos[real]):
        raise RuntimeError("the vectorised Qwen2-VL M-RoPE ids (train/batches.teacher_position_ids) differ from "
                           f"this transformers version's ({ref.shape} vs {pos.shape}); update the function")
    model._vamba_rope_checked = True


def track_video_tokens(model: Any) -> dict[str, torch.Tensor]:
    """Keep the Qwen2-VL merger's latest output (the video tokens) in the returned dict under "video"."""
    visual = getattr(model.model, "visual", None) or model.visual
    if not hasattr(visual.merger, "_video_store"):
        store: dict[str, torch.Tensor] = {}
        visual.merger.register_forward_hook(lambda mod, args, out: store.__setitem__("video", out))
        visual.merger._video_store = store
    return visual.merger._video_store


def track_layer(model: Any, k: int, setting: str = "answer_aux_layer") -> dict[str, torch.Tensor]:
    """Keep the Qwen2-VL text stream after its first ``k`` decoder layers [b, L + N, d] under "layer"."""
    layers = model.model.language_model.layers if hasattr(model.model, "language_model") else model.model.layers
    if not 1 <= k < len(layers):
        raise ValueError(f"{setting}={k}: pick 1 … {len(layers) - 1} (a layer below the last of {len(layers)})")
    layer = layers[k - 1]
    if getattr(layer, "_vamba_store", None) is None:
        store: dict[str, torch.Tensor] = {}
        layer.register_forward_hook(
            lambda mod, args, out: store.__setitem__("layer", out[0] if isinstance(out, tuple) else out))
        layer._vamba_store = store
    return layer._vamba_store


def answer_aux_loss(hidden: torch.Tensor, norm: Any, lm_head: Any, labels: torch.Tensor,
                    answer: Optional[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Cross-entropy of the answer's content token (``batches.answer_token``) read from a MIDDLE layer's
    state at the position that starts the reply, through the model's own final norm and lm_head.

    Why (issue 6, scripts/diagnostics/README.md): the tiny LM learns the answer from the video (open
    questions) and the letter of a named option (drills), but not their composition — one letter token
    per question. Asking layer k for the answer's content makes it one interface: the layers below put
    the answer there (from the video, or copied from a drill's question), the layers above find the option
    that carries it and write its letter. Returns (loss, accuracy); (0, nan) without answers in the batch.
    ``hidden`` [b, L, d] and ``labels`` [b, L] are in the same sequence coordinates."""
    if answer is None or not bool((answer != IGNORE).any()):
        return hidden.new_zeros(()).float(), float("nan")
    sup = labels[:, 1:] != IGNORE  # [b, L-1]
    rows = torch.nonzero((answer != IGNORE) & sup.any(1)).squeeze(1)  # [r]
    pos = sup.float().argmax(1)[rows]  # [r] the position predicting the reply's first token
    logits = lm_head(norm(hidden[rows, pos])).float()  # [r, V]
    gold = answer[rows]
    return F.cross_entropy(logits, gold), float((logits.argmax(-1) == gold).float().mean())


def option_verify_loss(hidden: torch.Tensor, probe: torch.nn.Module, norm: Any, marks: Optional[torch.Tensor],
                       shift: int = 0) -> tuple[torch.Tensor, float]:
    """Binary cross-entropy of a training-only linear ``probe`` on a MIDDLE layer's state at each option
    line's last token (``batches.option_marks``): is this option the answer?

    Why (issue 6, scripts/diagnostics/README.md): the reply gives one supervised letter per question and the
    letter composition learns late. Asked at every option, the layers below learn to mark the right option
    where it stands (it can see the video and the question); the layers above then only find the marked
    line and copy its letter. ``hidden`` [b, L, d] in the sequence coordinates of the prompt shifted by
    ``shift`` (the teacher's video tokens, all before the options). Returns (loss, accuracy); (0, nan)
    without marks in the batch."""
    if marks is None or not bool((marks[..., 0] >= 0).any()):
        return hidden.new_zeros(()).float(), float("nan")
    rows, cols = torch.nonzero(marks[..., 0] >= 0, as_tuple=True)  # [r] each
    pos = marks[rows, cols, 0] + shift  # [r]
    gold = marks[rows, cols, 1].float()  # [r]
    logit = probe(norm(hidden[rows, pos])).squeeze(-1).float()  # [r]
    return F.binary_cross_entropy_with_logits(logit, gold), float(((logit > 0).float() == gold).float().mean())


def video_scale_penalty(video: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """mean(relu(rms(token) − target)²) over video tokens.

    Trained from scratch, the merger learns to blow video tokens up (rms ~30 against ~0.5 for text),
    which turns them into attention sinks: the text attends to them and reads nothing (the answer
    stays at chance while a linear probe on the same tokens reads the scene at 90 %). Keeping their
    rms near the text scale removes the sink and the model grounds within a few hundred steps.
    """
    rms = video.float().pow(2).mean(-1).sqrt()
    return torch.relu(rms - target).pow(2).mean()


def _takes_token_types(model: Any) -> bool:
    import inspect

    return "mm_token_type_ids" in inspect.signature(type(model).forward).parameters


def batch_vision_attention(model: Any) -> int:
    """Training speed-up for the teacher: each ViT attention runs its equal-length 2-frame slices as ONE
    batched SDPA call instead of the tower's Python loop over slices (same function; the per-slice loop
    is kept for unequal slices). Patches the instances only; returns how many were patched."""
    import types

    visual = getattr(model.model, "visual", None) or model.visual
    for block in visual.blocks:
        attn = block.attn
        if not hasattr(attn, "_per_slice_forward"):
            attn._per_slice_forward = attn.forward
            attn.forward = types.MethodType(_batched_attention, attn)
    return len(visual.blocks)


def _batched_attention(self: Any, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, rotary_pos_emb: Any = None,
                       position_embeddings: Any = None, **kwargs: Any) -> torch.Tensor:
    n = hidden_states.shape[0]
    slices = cu_seqlens.numel() - 1
    if position_embeddings is None and rotary_pos_emb is not None:
        emb = torch.cat([rotary_pos_emb, rotary_pos_emb], dim=-1)
        position_embeddings = (emb.cos(), emb.sin())
    equal = slices > 0 and n % slices == 0 and bool(
        (cu_seqlens == torch.arange(slices + 1, device=cu_seqlens.device) * (n // slices)).all())
    if position_embeddings is None or not equal:
        return self._per_slice_forward(hidden_states, cu_seqlens, rotary_pos_emb=rotary_pos_emb,
                                       position_embeddings=position_embeddings, **kwargs)
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    q, k, v = self.qkv(hidden_states).reshape(n, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)  # [n, H, d]
    q, k, v = (x.reshape(slices, n // slices, self.num_heads, -1).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), scale=self.head_dim ** -0.5)  # [S, H, L, d]
    return self.proj(out.transpose(1, 2).reshape(n, -1))


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised positions."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


def topk_kl(student: torch.Tensor, teacher: torch.Tensor, k: int) -> torch.Tensor:
    """KL(teacher ‖ student) over the teacher's top-k vocabulary entries, per position, averaged.

    ``student``/``teacher``: logits [P, V] at the supervised positions. Both distributions are
    renormalised over the same k ids (k = min(k, V)), so the term is exactly 0 when the logits agree.
    """
    k = min(k, teacher.shape[-1])
    idx = teacher.float().topk(k, dim=-1).indices
    t = F.log_softmax(teacher.float().gather(-1, idx), dim=-1)
    s = F.log_softmax(student.float().gather(-1, idx), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def aligned_kl(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, n_video: int,
               k: int) -> torch.Tensor:
    """``topk_kl`` on the label positions: student position q ↔ teacher position q + ``n_video``."""
    length = student.shape[1]
    sel = labels[:, 1:] != IGNORE  # positions whose next token is supervised
    s = student[:, :-1][sel]
    t = teacher[:, n_video:n_video + length - 1][sel]
    return topk_kl(s, t.detach(), k)
