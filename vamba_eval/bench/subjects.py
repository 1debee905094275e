"""The models under test, built with random weights on the meta device and materialised on the target
device (no host copy of the weights), and the three timed workloads of each through the suite's own
code paths:

- VAMBA (``vamba_eval.models.vamba.modeling``): prefill = ``encode_video`` (ViT + per-layer
  cross-attn K/V + Mamba-2 updates, streamed) + ``text_step`` of the prompt (last-token logits);
  decode = ``generate`` (greedy) against the cached K/V; train = one stage-1 step (only cross_attn,
  vision_mixer and α trainable, ``train.stages.set_trainable``), per-layer gradient checkpointing,
  the LM loss of ``train.forward`` on the last few prompt tokens, then a plain SGD update (no
  optimizer state: the paper shards AdamW's over 8 GPUs with ZeRO-3). The mixers' scans over more than
  ``scan_pieces.PIECE_TOKENS`` tokens run in checkpointed pieces (``Mamba2Mixer.scan_piece_tokens``).
- Qwen2-VL: see :mod:`vamba_eval.bench.qwen_subject`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.utils.checkpoint import checkpoint

from vamba_eval.models.meta import materialize, params_on_meta
from vamba_eval.train.batches import IGNORE

SGD_LR = 1e-7
TRAIN_VIT_FRAMES = 32  # the prefill's largest ViT pass; the frozen ViT's activations are not kept


@dataclass(frozen=True)
class Prompt:
    """Random prompt ids around the video: ``before`` ids, <|vision_start|>, [video], <|vision_end|>, ``after``."""

    before: torch.Tensor  # [1, a]
    after: torch.Tensor  # [1, b]
    vision_start: int
    vision_end: int

    @property
    def text_tokens(self) -> int:
        return self.before.shape[1] + self.after.shape[1] + 2

    def ids(self, video_pad: Optional[int] = None, video_tokens: int = 0) -> torch.Tensor:
        """[1, n] ids; with ``video_pad``, that token × ``video_tokens`` between start and end (Qwen2-VL)."""
        dev = self.before.device
        mid = [torch.tensor([[self.vision_start]], device=dev)]
        if video_pad is not None:
            mid.append(torch.full((1, video_tokens), video_pad, device=dev, dtype=torch.long))
        mid.append(torch.tensor([[self.vision_end]], device=dev))
        return torch.cat([self.before, *mid, self.after], dim=1)


def make_prompt(raw: dict[str, Any], n_text: int, device: torch.device, seed: int) -> Prompt:
    """``n_text`` prompt tokens (≥ 4) drawn below the special-token range of the config's vocabulary."""
    if n_text < 4:
        raise ValueError(f"text tokens must be ≥ 4, got {n_text}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    hi = min(int(raw.get("bos_token_id") or raw["vocab_size"]), int(raw["vocab_size"]))
    ids = torch.randint(0, hi, (1, n_text - 2), generator=g).to(device)
    half = (n_text - 2) // 2
    return Prompt(ids[:, :half], ids[:, half:], int(raw["vision_start_token_id"]), int(raw["vision_end_token_id"]))


def make_frames(n: int, height: int, width: int, device: torch.device, seed: int) -> torch.Tensor:
    """Random uint8 frames [n, H, W, 3] made on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (n, height, width, 3), dtype=torch.uint8, device=device, generator=g)


def loss_labels(ids: torch.Tensor, n_loss: int) -> torch.Tensor:
    """Labels = ids on the last ``n_loss`` positions, IGNORE elsewhere ([1, n])."""
    labels = torch.full_like(ids, IGNORE)
    labels[:, -n_loss:] = ids[:, -n_loss:]
    return labels


@torch.no_grad()
def sgd_update(params: list[torch.nn.Parameter], lr: float = SGD_LR) -> int:
    """p -= lr·grad, grads dropped; returns how many tensors had a gradient."""
    n = 0
    for p in params:
        if p.grad is not None:
            p.add_(p.grad, alpha=-lr)
            p.grad = None
            n += 1
    return n


def count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


class VambaSubject:
    """VAMBA through ``VambaForConditionalGeneration`` (random weights)."""

    name = "vamba"
    frames_on = "host"  # as `run` feeds it: the video stays in host memory, encode_video copies each piece over

    def __init__(self, raw: dict[str, Any], device: torch.device, dtype: torch.dtype, backend: Optional[str],
                 compile_video: bool, seed: int, chunk_frames: Optional[int] = None) -> None:
        from vamba_eval.models.vamba.backends import select_backend
        from vamba_eval.models.vamba.config import VambaConfig
        from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration

        self.raw, self.device, self.dtype = raw, device, dtype
        with params_on_meta():
            model = VambaForConditionalGeneration(VambaConfig.from_dict(raw))
        self.params = count(list(model.parameters()))  # as released, before the unused mixer is dropped
        model.release_unused_video_mixer()  # never allocated: its output is never read
        materialize(model, device, dtype)
        model.init_weights(seed)
        model.set_ssm_backend(select_backend(backend, device))
        model.chunk_frames = chunk_frames  # None: auto_chunk_frames per video
        if compile_video:
            model.compile_video_path()
        self.model = model.eval()
        self.backend = model.ssm_backend.name
        self.compiled = compile_video
        self._trainable: Optional[list[torch.nn.Parameter]] = None
        self.train_backend: Optional[Any] = None  # set when the inference backend cannot train
        self.train_note = ""

    def variants(self, mode: str) -> list[str]:
        return ["compiled" if self.compiled else "eager"]

    def stream_info(self, frames: int) -> dict[str, int]:
        """The streamed piece and the ViT pass (frames) that ``encode_video`` uses for ``frames`` frames, and
        whether its last piece is cut in halves (``tail``: 1 or 0)."""
        chunk = self.model.chunk_frames_for(frames)
        return {"chunk_frames": chunk, "vit_chunk_frames": self.model.vit_frames_for(chunk),
                "tail": int(self.model.tail_for(frames))}

    def prefill(self, frames: torch.Tensor, prompt: Prompt, variant: str) -> Any:
        """encode_video + the prompt through every layer (last-token logits) → the VideoContext."""
        from transformers import DynamicCache

        video = self.model.encode_video(frames)
        with torch.inference_mode():
            self.model.text_step(prompt.ids(), video, DynamicCache(), start=0)
        return video

    def decode(self, frames: torch.Tensor, prompt: Prompt, tokens: int, repeats: int, context: Any) -> dict[str, Any]:
        """Greedy ``generate`` after a prefill (``context``: a VideoContext to reuse, else one is made)."""
        video = context if context is not None else self.prefill(frames, prompt, "")
        self.model.generate(prompt.ids(), video, max_new_tokens=2, eos_token_ids=())  # allocator, cache: untimed
        per_token: list[float] = []
        for _ in range(max(1, repeats)):
            out, t = self.model.generate(prompt.ids(), video, max_new_tokens=tokens, eos_token_ids=())
            per_token.append(t["generate_s"] / max(1, len(out)))  # one text_step per generated token
        return {"decode_tokens": tokens, "per_token_s": per_token}

    # --- training ------------------------------------------------------------------------
    def trainable(self) -> list[torch.nn.Parameter]:
        if self._trainable is None:
            from vamba_eval.train.stages import set_trainable

            names = set(set_trainable(self.model, "stage1"))
            self._trainable = [p for n, p in self.model.named_parameters() if n in names]
        return self._trainable

    def train_step(self, frames: torch.Tensor, prompt: Prompt, n_loss: int) -> dict[str, Any]:
        """One stage-1 step with the inference backend, or with ``torch``'s when that backend's backward
        refuses to run (fla on Hopper with Triton < 3.7.1 raises rather than return wrong gradients)."""
        from vamba_eval.models.vamba.backends import select_backend

        inference = self.model.ssm_backend
        if self.train_backend is not None:
            self.model.set_ssm_backend(self.train_backend)
        try:
            return {**self._train_step(frames, prompt, n_loss), **self.train_info()}
        except RuntimeError as err:
            if isinstance(err, torch.cuda.OutOfMemoryError) or self.train_backend is not None or \
                    inference.name == "torch":
                raise
            for p in self.trainable():
                p.grad = None
            self.train_backend = select_backend("torch", self.device)
            self.train_note = f"{inference.name} backward failed, trained with torch: {str(err).splitlines()[0][:200]}"
            self.model.set_ssm_backend(self.train_backend)
            return {**self._train_step(frames, prompt, n_loss), **self.train_info()}
        finally:
            self.model.set_ssm_backend(inference)

    def train_info(self) -> dict[str, Any]:
        name = (self.train_backend or self.model.ssm_backend).name
        return {"train_ssm_backend": name, **({"train_note": self.train_note} if self.train_note else {})}

    def _train_step(self, frames: torch.Tensor, prompt: Prompt, n_loss: int) -> dict[str, Any]:
        """Stage-1 step: forward of ``train.forward.student_logits`` with each layer checkpointed."""
        from vamba_eval.train.forward import lm_loss

        model, params = self.model, self.trainable()
        model.train()
        try:
            ids = prompt.ids()
            with torch.no_grad():  # the ViT is frozen in stage 1; it runs over TRAIN_VIT_FRAMES at a time
                v, grid = model.video_stream(frames, vit_frames=TRAIN_VIT_FRAMES)  # [1, M, d]
            h = model.model.embed_tokens(ids)  # [1, n, d]
            pe, q_rope = model._text_rope(h, 0)
            v_rope = model._video_rope(v, grid, 0, grid.t)  # None unless cross_attn_use_position_embeddings
            last = len(model.layers) - 1
            for i, layer in enumerate(model.layers):
                h, v = checkpoint(layer, h, v, pe, video_rope=v_rope, q_rope=q_rope, update_video=i < last,
                                  use_reentrant=False)
            loss = lm_loss(model.lm_head(model.model.norm(h)), loss_labels(ids, n_loss))
            loss.backward()
            return {"loss": float(loss.detach()), "grad_tensors": sgd_update(params)}
        finally:
            model.eval()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
