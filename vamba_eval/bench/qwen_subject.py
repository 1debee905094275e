"""Qwen2-VL, the transformer baseline: `transformers`' own ``Qwen2VLForConditionalGeneration``.

Inputs are built the way the suite's adapter (``models.qwen2vl_adapter``) builds them:
``<|video_pad|>`` × M inside the prompt, ``pixel_values_videos`` from ``vision.patchify`` (inside the
timed region, as VAMBA's ``encode_video`` patchifies inside its own) and ``mm_token_type_ids``.

Variants: ``sdpa`` (best practice: SDPA attention, logits for the last position only, KV cache kept
for the answer) for every mode; ``paper`` (prefill only: logits for every position, as the paper's
setup materialised) when asked for.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from vamba_eval.bench.subjects import Prompt, count, sgd_update
from vamba_eval.models.meta import materialize, params_on_meta


@torch.no_grad()
def random_init(model: torch.nn.Module, std: float, seed: int) -> None:
    """Qwen2-VL's rule: matrices/convs/embeddings ~ N(0, std), biases 0, norm weights 1."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, std)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def _step_clock(device: torch.device) -> Any:
    """A stopping criterion that never stops: it records a synchronised time stamp per generated token."""
    from transformers import StoppingCriteria

    class StepClock(StoppingCriteria):
        def __init__(self) -> None:
            self.device = device
            self.stamps: list[float] = []

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StepClock()


class QwenSubject:
    name = "qwen2vl"
    frames_on = "host"  # as `run` feeds it: frames copied to the GPU for the patchify, pixel values kept there

    def __init__(self, raw: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int,
                 paper_variant: bool = True) -> None:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        self.raw, self.device, self.dtype = raw, device, dtype
        cfg = Qwen2VLConfig(**raw)
        for sub in (cfg, cfg.text_config, cfg.vision_config):
            sub._attn_implementation = "sdpa"
        with params_on_meta():
            model = Qwen2VLForConditionalGeneration(cfg)
        materialize(model, device, dtype)
        random_init(model, float(raw.get("initializer_range", 0.02)), seed)
        self.model = model.eval()
        self.paper_variant = paper_variant
        self.params = count(list(model.parameters()))
        self.vcfg = model.config.vision_config
        self.video_pad = int(raw["video_token_id"])
        self.backend = None
        self._trainable: list[torch.nn.Parameter] | None = None

    def stream_info(self, frames: int) -> dict[str, int]:
        return {}  # the whole video in one forward

    def variants(self, mode: str) -> list[str]:
        return ["sdpa", "paper"] if mode == "prefill" and self.paper_variant else ["sdpa"]

    def inputs(self, frames: torch.Tensor, prompt: Prompt) -> dict[str, torch.Tensor]:
        from vamba_eval.models.vamba.vision import patchify

        pixels, grid = patchify(frames.to(self.device, non_blocking=True), self.vcfg.patch_size,
                                self.vcfg.temporal_patch_size, self.vcfg.spatial_merge_size)  # as the adapter does
        ids = prompt.ids(self.video_pad, grid.num_tokens)
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
               "pixel_values_videos": pixels.to(self.dtype), "video_grid_thw": grid.thw().to(self.device)}
        if _takes_token_types(self.model):  # without it transformers falls back to 1-D positions
            out["mm_token_type_ids"] = (ids == self.video_pad).to(torch.int32) * 2
        return out

    def prefill(self, frames: torch.Tensor, prompt: Prompt, variant: str) -> Any:
        keep = 0 if variant == "paper" else 1
        with torch.inference_mode():
            out = self.model(**self.inputs(frames, prompt), use_cache=True, logits_to_keep=keep)
        return out.past_key_values

    def decode(self, frames: torch.Tensor, prompt: Prompt, tokens: int, repeats: int, context: Any) -> dict[str, Any]:
        """One ``generate`` (its own prefill) of exactly ``tokens`` greedy tokens; per-token intervals."""
        from transformers import StoppingCriteriaList

        clock = _step_clock(self.device)
        eos = int(self.raw.get("eos_token_id") or 0)
        with torch.inference_mode():
            self.model.generate(**self.inputs(frames, prompt), max_new_tokens=tokens, min_new_tokens=tokens,
                                do_sample=False, eos_token_id=eos, pad_token_id=eos,
                                stopping_criteria=StoppingCriteriaList([clock]))
        steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]  # after the prefill's first token
        return {"decode_tokens": len(clock.stamps), "per_token_s": steps}

    def trainable(self) -> list[torch.nn.Parameter]:
        """The decoder layers (ViT, embeddings and lm_head frozen)."""
        if self._trainable is None:
            self._trainable = []
            for name, p in self.model.named_parameters():
                train = ".layers." in name and "visual" not in name
                p.requires_grad_(train)
                if train:
                    self._trainable.append(p)
            kwargs = {"use_reentrant": False}
            if hasattr(self.model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return self._trainable

    def train_step(self, frames: torch.Tensor, prompt: Prompt, n_loss: int) -> dict[str, float]:
        params = self.trainable()
        self.model.train()
        try:
            inputs = self.inputs(frames, prompt)
            out = self.model(**inputs, use_cache=False, logits_to_keep=n_loss + 1)
            logits = out.logits[:, :-1].float()  # [1, n_loss, V]: predictions of the last n_loss ids
            target = inputs["input_ids"][:, -n_loss:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            loss.backward()
            return {"loss": float(loss.detach()), "grad_tensors": sgd_update(params)}
        finally:
            self.model.eval()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


def _takes_token_types(model: Any) -> bool:
    from vamba_eval.train.forward import _takes_token_types as takes

    return takes(model)
