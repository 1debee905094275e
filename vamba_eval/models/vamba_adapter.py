"""``--model vamba``: our VAMBA implementation behind the ModelAdapter contract.

Without ``--model-path`` the bundled tiny VAMBA is used; until a trained tiny checkpoint ships
(a later issue) that is the tiny architecture with SEEDED RANDOM weights, recorded as
``untrained: true`` (its answers are chance level by construction).

Interleaved prompts (``Prompt.interleave``): VAMBA's video tokens are not in the text sequence, so
text cannot sit between frames; the texts go, in order, before the prompt's ``user`` text, and
``describe()["interleave_support"]`` says ``"prepended"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from vamba_eval.models.base import (ModelAdapter, ModelSpec, PeakMemory, count_params, prepend_interleave, qwen_chat,
                                    resolve_dtype, timed)
from vamba_eval.types import Prediction, Request


def bundled_checkpoint(name: str) -> Optional[Path]:
    """A trained tiny checkpoint shipped inside the package, if any."""
    folder = Path(__file__).resolve().parent.parent / "checkpoints" / name
    return folder if (folder / "config.json").is_file() else None


def _untrained_tiny(seed: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    from vamba_eval.models.tokenizer import build_byte_tokenizer
    from vamba_eval.models.vamba.config import VambaConfig
    from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration
    from vamba_eval.models.vamba.tiny import tiny_vamba_config

    model = VambaForConditionalGeneration(VambaConfig.from_dict(tiny_vamba_config("mamba2", layers=2)))
    model.init_weights(seed)
    return model.to(device=device, dtype=dtype).eval(), build_byte_tokenizer()


class VambaAdapter(ModelAdapter):
    name = "vamba"

    def __init__(self, spec: ModelSpec) -> None:
        from vamba_eval.models.vamba.backends import select_backend

        self.spec = spec
        self.device = torch.device(spec.device)
        dtype = resolve_dtype(spec.dtype, self.device)
        path = Path(spec.path) if spec.path else bundled_checkpoint("vamba-tiny")
        self.untrained, self.bundled = path is None, not spec.path and path is not None
        if path is None:
            self.model, self.tokenizer = _untrained_tiny(spec.seed, self.device, dtype)
            self.path_label = "builtin:vamba-tiny-untrained"
        else:
            from vamba_eval.models.tokenizer import load_tokenizer
            from vamba_eval.models.vamba.checkpoint import from_pretrained

            self.model = from_pretrained(path, self.device, dtype)
            self.tokenizer = load_tokenizer(path)
            self.path_label = str(path)
        self.params = count_params(self.model)  # as stored, before the unused mixer is released
        self.model.release_unused_video_mixer()
        self.model.set_ssm_backend(select_backend(spec.ssm_backend, self.device))
        if spec.chunk_frames:
            self.model.chunk_frames = spec.chunk_frames
        if spec.compile:
            self.model.compile_video_path()
        self.eos_ids = sorted({self.model.config.token_id("eos_token_id", 151645),
                               self.tokenizer.convert_tokens_to_ids("<|im_end|>")})

    def _one(self, req: Request) -> Prediction:
        # VAMBA: no video pad tokens in the text (text reads the video through cross-attention), so an
        # interleaved prompt cannot place its texts between frames: they go, in order, before `user`.
        text = qwen_chat(prepend_interleave(req.prompt), video_tokens="")
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with PeakMemory(self.device) as mem:
            t0 = timed()
            video = self.model.encode_video(torch.from_numpy(req.frames), chunk_frames=self.spec.chunk_frames)
            self.model._sync()
            t1 = timed()
            out, times = self.model.generate(ids, video, req.max_new_tokens, self.eos_ids)
        gen = [t for t in out if t not in self.eos_ids]
        return Prediction(
            text=self.tokenizer.decode(gen, skip_special_tokens=True),
            prompt_tokens=int(ids.shape[1]), video_tokens=video.num_tokens, output_tokens=len(out),
            timings={"prefill_video_s": t1 - t0, "prefill_text_s": times["prefill_text_s"],
                     "generate_s": times["generate_s"]},
            peak_memory_bytes=mem.peak,
        )

    def generate(self, batch: list[Request]) -> list[Prediction]:
        return [self._one(req) for req in batch]

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        return {"name": self.name, "path": self.path_label, "untrained": self.untrained, "bundled": self.bundled,
                "dtype": str(self.model.dtype).replace("torch.", ""), "device": str(self.device),
                "params": self.params, "ssm_backend": self.model.ssm_backend.name,
                "mixer_type": cfg.mixer_type, "layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                "stream_threshold_frames": self.model.stream_threshold, "chunk_frames": self.model.chunk_frames or "auto",
                "vit_chunk_frames": self.model.vit_chunk_frames or "auto",
                "compiled": self.spec.compile, "interleave_support": "prepended"}
