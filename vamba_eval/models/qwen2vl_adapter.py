"""``--model qwen2vl``: the transformer baseline, `transformers`' own Qwen2VLForConditionalGeneration.

Video goes in the way Qwen2-VL takes it: ``<|video_pad|>`` × (video tokens) inside the text,
``pixel_values_videos`` + ``video_grid_thw`` from the same patchification as the processor
(``vision.patchify``, checked against the `transformers` image processor in the tests), and
``mm_token_type_ids`` so that `transformers` computes M-RoPE.

Interleaved prompts (``Prompt.interleave``, e.g. LongVideoBench subtitles) are realised for real:
the frames are split into consecutive groups (``base.frame_groups``: a boundary inside a 2-frame
temporal patch moves UP to the next even frame count), each group its own
``<|vision_start|><|video_pad|>…<|vision_end|>`` block followed by its texts, and
``video_grid_thw`` gets one row per group. Qwen2-VL's ViT attends within one temporal patch, so
the visual tokens are the same as for the unsplit video; only the text between them (and the
M-RoPE positions that text shifts) differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vamba_eval.models.base import (ModelAdapter, ModelSpec, PeakMemory, count_params, frame_groups, interleave_text,
                                    qwen_chat_segments, resolve_dtype, timed)
from vamba_eval.models.vamba.vision import check_frames, patchify
from vamba_eval.models.vamba_adapter import bundled_checkpoint
from vamba_eval.types import Prediction, Request


def _untrained_tiny(seed: int) -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from vamba_eval.models.tokenizer import build_byte_tokenizer
    from vamba_eval.models.vamba.tiny import tiny_qwen2vl_config

    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(**tiny_qwen2vl_config(layers=2))
    cfg._attn_implementation = "sdpa"
    return Qwen2VLForConditionalGeneration(cfg), build_byte_tokenizer()


def load_qwen2vl(path: Path, dtype: torch.dtype) -> Any:
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa",
                                                           local_files_only=True)


class Qwen2VLAdapter(ModelAdapter):
    name = "qwen2vl"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device = torch.device(spec.device)
        dtype = resolve_dtype(spec.dtype, self.device)
        path = Path(spec.path) if spec.path else bundled_checkpoint("qwen2vl-tiny")
        self.untrained, self.bundled = path is None, not spec.path and path is not None
        if path is None:
            self.model, self.tokenizer = _untrained_tiny(spec.seed)
            self.path_label = "builtin:qwen2vl-tiny-untrained"
        else:
            from vamba_eval.models.tokenizer import load_tokenizer

            self.model, self.tokenizer = load_qwen2vl(path, dtype), load_tokenizer(path)
            self.path_label = str(path)
        self.model = self.model.to(device=self.device, dtype=dtype).eval()
        self.eos_ids = sorted({int(self.model.config.text_config.eos_token_id or 0),
                               self.tokenizer.convert_tokens_to_ids("<|im_end|>")})

    def _inputs(self, req: Request) -> dict[str, torch.Tensor]:
        vcfg = self.model.config.vision_config
        frames = torch.from_numpy(req.frames)
        check_frames(frames, vcfg.patch_size, vcfg.spatial_merge_size)
        lead, groups = frame_groups(req.prompt.interleave, frames.shape[0], vcfg.temporal_patch_size)
        pixels, thw, segments = [], [], []
        for start, end, texts in groups:  # one group (the whole video) unless the prompt interleaves text
            pix, grid = patchify(frames[start:end].to(self.device), vcfg.patch_size, vcfg.temporal_patch_size,
                                 vcfg.spatial_merge_size)
            pixels.append(pix)
            thw.append(grid.thw())
            segments.append(("<|video_pad|>" * grid.num_tokens, interleave_text(texts)))
        text = qwen_chat_segments(req.prompt, segments, lead=interleave_text(lead))
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]], device=self.device)
        # mm_token_type_ids (0 text, 2 video), as the processor returns it: without it `transformers`
        # silently falls back to 1-D positions instead of Qwen2-VL's M-RoPE.
        types = (ids == self.model.config.video_token_id).to(torch.int32) * 2
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": types,
                "pixel_values_videos": torch.cat(pixels).to(self.model.dtype),
                "video_grid_thw": torch.cat(thw).to(self.device)}

    @torch.inference_mode()
    def _one(self, req: Request) -> Prediction:
        inputs = self._inputs(req)
        n_in = inputs["input_ids"].shape[1]
        with PeakMemory(self.device) as mem:
            t0 = timed()
            out = self.model.generate(**inputs, max_new_tokens=req.max_new_tokens, do_sample=False,
                                      eos_token_id=self.eos_ids, pad_token_id=self.eos_ids[0])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        new = [t for t in out[0, n_in:].tolist() if t not in self.eos_ids]
        n_video = int(inputs["video_grid_thw"].prod(-1).sum()) // (self.model.config.vision_config.spatial_merge_size ** 2)
        return Prediction(text=self.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=n_in - n_video,
                          video_tokens=n_video, output_tokens=out.shape[1] - n_in,
                          timings={"generate_total_s": timed() - t0}, peak_memory_bytes=mem.peak)

    def generate(self, batch: list[Request]) -> list[Prediction]:
        return [self._one(req) for req in batch]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path_label, "untrained": self.untrained, "bundled": self.bundled,
                "dtype": str(self.model.dtype).replace("torch.", ""), "device": str(self.device),
                "params": count_params(self.model), "attn_implementation": "sdpa",
                "interleave_support": "interleaved"}
