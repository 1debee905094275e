"""``--model hf-video``: any `transformers` video LMM that takes video through its processor's chat template.

The chat is built the way the processor expects (``[system?, user: [video, text]]`` →
``processor.apply_chat_template``) and the frames WE sampled go in as the video (the processor's own
frame sampling is turned off, and so is its resizing where the model allows it).

In `transformers` 5.x every video processor needs torchvision. Without torchvision the adapter does
not fall back silently: it uses a named *native inputs* builder for the model family that produces the
tensors the processor would (``qwen2_5_vl``, ``llava_onevision``), and records which path ran
(``describe()["input_path"]``: ``"processor"`` | ``"native:<family>"``). Any other family without
torchvision is a clear error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from vamba_eval.models.base import (ModelAdapter, ModelSpec, PeakMemory, count_params, prepend_interleave,
                                    resolve_dtype, timed)
from vamba_eval.models.vamba.vision import IMAGE_MEAN, IMAGE_STD, FrameError, check_frames, patchify
from vamba_eval.types import Prediction, Prompt, Request

DEFAULT_FPS = 24.0  # what `transformers`' VideoMetadata.sampled_fps assumes when no fps is known
PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PILImageResampling value → torch interpolate mode

# Class defaults of the `transformers` 5.23 video processors (they cannot be imported without
# torchvision); a checkpoint's saved video-processor config overrides them key by key.
VIDEO_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {  # Qwen2VLVideoProcessor
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD),
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    },
    "llava_onevision": {  # LlavaOnevisionVideoProcessor
        "do_resize": True, "size": {"height": 384, "width": 384}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD),
    },
}
# What we pass to the processor's video path besides do_sample_frames=False: Qwen takes our frame
# size as is (multiples of 28); LLaVA-OneVision's SigLIP needs the processor's fixed size.
PROCESSOR_VIDEO_KWARGS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {"do_resize": False, "cap_pixels_per_frame": False},
}


class NativeInputError(ValueError):
    """The native inputs builder cannot reproduce the processor for this checkpoint."""


def torchvision_available() -> bool:
    """Whether the processor's video path can run (transformers 5.x video processors need torchvision)."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def sampled_fps(frame_times: tuple[float, ...]) -> Optional[float]:
    """Frames per second of the sampled frames (mean spacing); None when it cannot be told (one frame)."""
    if len(frame_times) < 2 or frame_times[-1] <= frame_times[0]:
        return None
    return (len(frame_times) - 1) / (frame_times[-1] - frame_times[0])


def chat_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The conversation as processors' chat templates take it: optional system turn, then video + text.

    Interleaved subtitles (``Prompt.interleave``) go, in order, before the question: one video per
    turn is what these processors take (recorded as ``interleave_support: "prepended"``).
    """
    prompt = prepend_interleave(prompt)
    messages: list[dict[str, Any]] = []
    if prompt.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt.user}]})
    return messages


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_chat_template(folder: Path) -> str:
    """The processor's chat template, with ProcessorMixin.from_pretrained's priority: processor_config.json
    key → chat_template.json → chat_template.jinja (the tokenizer's own template is not the processor's)."""
    jinja = folder / "chat_template.jinja"
    template = (_read_json(folder / "processor_config.json").get("chat_template")
                or _read_json(folder / "chat_template.json").get("chat_template")
                or (jinja.read_text(encoding="utf-8") if jinja.is_file() else None))
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise FileNotFoundError(f"{folder}: no processor chat template (chat_template.jinja / chat_template.json); "
                                "copy it from the model release")
    return template


def video_settings(folder: Path, family: str) -> dict[str, Any]:
    """Effective video-processor settings: class defaults ← the saved config (same file priority as
    BaseVideoProcessor.get_video_processor_dict: processor_config.json → video_preprocessor_config.json
    → preprocessor_config.json)."""
    saved = _read_json(folder / "processor_config.json").get("video_processor")
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        saved = saved or _read_json(folder / name)
    return {**VIDEO_DEFAULTS.get(family, {}), **saved}


@dataclass(frozen=True)
class NativeContext:
    """What a native inputs builder needs: the tokenizer, configs and the processor's saved settings."""

    family: str
    tokenizer: Any
    model_config: Any
    video: dict[str, Any]  # effective video-processor settings
    processor: dict[str, Any]  # processor_config.json, top level (num_image_tokens, video_token …)

    def token(self, kind: str, default: str) -> str:
        """The processor's placeholder token: tokenizer attribute → processor config → default."""
        return getattr(self.tokenizer, f"{kind}_token", None) or self.processor.get(f"{kind}_token") or default


def _expand_and_tokenize(ctx: NativeContext, text: str, token: str, n: int) -> dict[str, torch.Tensor]:
    """Replace the one video placeholder by ``n`` copies and tokenize, as ProcessorMixin.__call__ does."""
    if text.count(token) != 1:
        raise ValueError(f"the chat template must put exactly one {token} in the prompt, found {text.count(token)}")
    enc = ctx.tokenizer([text.replace(token, token * n)], return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _normalise(x: torch.Tensor, v: dict[str, Any]) -> torch.Tensor:
    """TorchvisionBackend.rescale_and_normalize: uint8 [..., 3, H, W] → float32, rescale fused into mean/std."""
    shape = (3, 1, 1)
    if v.get("do_normalize", True):
        scale = 1.0 / v["rescale_factor"] if v.get("do_rescale", True) else 1.0
        mean = torch.tensor(v["image_mean"]) * scale
        std = torch.tensor(v["image_std"]) * scale
        return (x.to(torch.float32) - mean.view(shape)) / std.view(shape)
    if v.get("do_rescale", True):
        return x * v["rescale_factor"]
    return x.to(torch.float32)


def resize_like_torchvision(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """torchvision.transforms.v2.functional.resize_image on uint8 [T, 3, H, W] (antialias=True)."""
    if tuple(x.shape[-2:]) == size:
        return x
    native_u8 = x.device.type == "cpu" and (
        mode == "bicubic" or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
    y = x if native_u8 else x.to(torch.float32)
    y = torch.nn.functional.interpolate(y, size=list(size), mode=mode, align_corners=False, antialias=True)
    if native_u8:
        return y
    if mode == "bicubic":
        y = y.clamp_(0, 255)
    return y.round_().to(torch.uint8)


def build_qwen2_5_vl(ctx: NativeContext, frames: np.ndarray, frame_times: tuple[float, ...],
                     text: str) -> dict[str, torch.Tensor]:
    """Qwen2VLVideoProcessor with do_resize=False + Qwen2_5_VLProcessor: Qwen2-VL patches, second_per_grid_ts."""
    v, vc = ctx.video, ctx.model_config.vision_config
    if (v["image_mean"], v["image_std"], v["rescale_factor"]) != (list(IMAGE_MEAN), list(IMAGE_STD), 1 / 255) \
            or not (v.get("do_rescale", True) and v.get("do_normalize", True)):
        raise NativeInputError("native qwen2_5_vl inputs assume CLIP mean/std and 1/255 rescaling, but the "
                               "checkpoint's video processor differs; install torchvision to use the processor")
    patch, temporal, merge = v["patch_size"], v["temporal_patch_size"], v["merge_size"]
    model_sizes = (vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size)
    if (patch, temporal, merge) != model_sizes:
        raise NativeInputError(f"video processor patch/temporal/merge {(patch, temporal, merge)} disagree with "
                               f"the model's vision_config {model_sizes}")
    video = torch.from_numpy(np.ascontiguousarray(frames))  # [T, H, W, 3] uint8
    check_frames(video, patch, merge)
    pixels, grid = patchify(video, patch, temporal, merge)  # [t·h·w, 3·temporal·patch²]
    out = _expand_and_tokenize(ctx, text, ctx.token("video", "<|video_pad|>"), grid.num_tokens)
    ids = out["input_ids"]
    image_id = ctx.tokenizer.convert_tokens_to_ids(ctx.token("image", "<|image_pad|>"))
    video_id = ctx.tokenizer.convert_tokens_to_ids(ctx.token("video", "<|video_pad|>"))
    out["mm_token_type_ids"] = (ids == image_id).long() + 2 * (ids == video_id).long()  # 0 text, 1 image, 2 video
    out["pixel_values_videos"] = pixels
    out["video_grid_thw"] = grid.thw()
    out["second_per_grid_ts"] = torch.tensor([temporal / (sampled_fps(frame_times) or DEFAULT_FPS)])
    return out


def _llava_size(ctx: NativeContext) -> tuple[int, int]:
    """The square SigLIP input size the video processor resizes to, checked against the model."""
    size = ctx.video.get("size") or {}
    if "height" not in size or "width" not in size:
        raise NativeInputError(f"native llava_onevision inputs need size={{height, width}} in the video "
                               f"processor config, got {size}; install torchvision to use the processor")
    image_size = ctx.model_config.vision_config.image_size
    if (size["height"], size["width"]) != (image_size, image_size):
        raise NativeInputError(f"video processor size {size} does not match the vision tower's {image_size}")
    return int(size["height"]), int(size["width"])


def build_llava_onevision(ctx: NativeContext, frames: np.ndarray, frame_times: tuple[float, ...],
                          text: str) -> dict[str, torch.Tensor]:
    """LlavaOnevisionVideoProcessor + LlavaOnevisionProcessor: resize, rescale, normalise; T·⌈P/2⌉²+1 tokens."""
    v = ctx.video
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
    if v.get("do_resize", True):
        mode = PIL_RESAMPLE.get(int(v.get("resample", 3)))
        if mode is None:
            raise NativeInputError(f"resample={v.get('resample')} has no native equivalent; install torchvision")
        video = resize_like_torchvision(video, _llava_size(ctx), mode)
    pixels = _normalise(video, v)  # [T, 3, S, S] float32
    vc = ctx.model_config.vision_config
    patches = vc.image_size // vc.patch_size
    num_image_tokens = ctx.processor.get("num_image_tokens") or patches * patches
    if num_image_tokens != patches * patches:
        raise NativeInputError(f"processor num_image_tokens={num_image_tokens} but the vision tower gives "
                               f"{patches}x{patches} patches")
    pooled = math.ceil(int(math.sqrt(num_image_tokens)) / 2)
    n_tokens = pixels.shape[0] * pooled * pooled + 1  # +1: image_newline after the frames
    out = _expand_and_tokenize(ctx, text, ctx.token("video", "<video>"), n_tokens)
    out["pixel_values_videos"] = pixels[None]  # [1, T, 3, S, S]
    return out


NativeBuilder = Callable[[NativeContext, np.ndarray, tuple[float, ...], str], dict[str, torch.Tensor]]
NATIVE_BUILDERS: dict[str, NativeBuilder] = {"qwen2_5_vl": build_qwen2_5_vl, "llava_onevision": build_llava_onevision}


def model_class_for(config: Any) -> Any:
    """The Auto class that maps this config to a generating multimodal model."""
    from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM

    for auto in (AutoModelForImageTextToText, AutoModelForMultimodalLM):
        if type(config) in auto._model_mapping:
            return auto
    raise ValueError(f"model_type {config.model_type!r} is not an image/video-text-to-text model in "
                     "transformers (AutoModelForImageTextToText / AutoModelForMultimodalLM)")


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the generation config's eos (int or list) and the tokenizer's eos."""
    ids: set[int] = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if src is not None:
            ids.update([src] if isinstance(src, int) else src)
    return sorted(ids)


def _load_model(path: Path, config: Any, dtype: torch.dtype) -> Any:
    return model_class_for(config).from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa",
                                                   local_files_only=True)


class HFVideoAdapter(ModelAdapter):
    """A `transformers` video LMM from a local folder; greedy decoding; processor or native video inputs.

    ``input_path``: None picks ``"processor"`` when torchvision is importable, else ``"native"``;
    pass ``"native"`` to force the native builder (tests compare the two on torchvision machines).
    """

    name = "hf-video"

    def __init__(self, spec: ModelSpec, input_path: Optional[str] = None) -> None:
        from transformers import AutoConfig

        if not spec.path:
            raise ValueError("--model hf-video needs --model-path: a local folder holding a transformers video "
                             "LMM (config.json, weights, tokenizer, processor configs); nothing is downloaded")
        self.path = Path(spec.path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path}: no config.json; --model-path must be a saved transformers "
                                    "model folder")
        self.spec, self.device = spec, torch.device(spec.device)
        config = AutoConfig.from_pretrained(str(self.path), local_files_only=True)
        self.family = config.model_type
        self.input_path = self._choose_input_path(input_path)
        dtype = resolve_dtype(spec.dtype, self.device)
        self.model = _load_model(self.path, config, dtype).to(self.device).eval()
        if self.input_path == "processor":
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(str(self.path), local_files_only=True)
            self.tokenizer = self.processor.tokenizer
            self.video_kwargs = {"do_sample_frames": False, **PROCESSOR_VIDEO_KWARGS.get(self.family, {})}
        else:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.chat_template = read_chat_template(self.path)
            self.native = NativeContext(self.family, self.tokenizer, self.model.config,
                                        video_settings(self.path, self.family),
                                        _read_json(self.path / "processor_config.json"))
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else (self.eos_ids or [0])[0]
        self.video_token_id = self._video_token_id()

    def _choose_input_path(self, requested: Optional[str]) -> str:
        """"processor" | "native:<family>"; an unknown family without torchvision is an error."""
        if requested not in (None, "processor", "native"):
            raise ValueError(f"input_path must be None, 'processor' or 'native', got {requested!r}")
        if requested == "processor" or (requested is None and torchvision_available()):
            return "processor"
        if self.family not in NATIVE_BUILDERS:
            raise RuntimeError(
                f"{self.path}: model_type {self.family!r} has no native video-inputs builder (have: "
                f"{', '.join(sorted(NATIVE_BUILDERS))}) and torchvision is not installed, which transformers' "
                "video processors need; install torchvision (matching your torch) to use the processor")
        return f"native:{self.family}"

    def _video_token_id(self) -> int:
        """The id the model replaces by video features: its config's, else the processor's token."""
        token_id = getattr(self.model.config, "video_token_id", None)
        if token_id is None:
            token = self.processor.video_token if self.input_path == "processor" else self.native.token("video", "")
            token_id = self.tokenizer.convert_tokens_to_ids(token)
        return int(token_id)

    def _prompt_text(self, prompt: Prompt) -> str:
        """The chat template applied as the processor applies it, plus the assistant prefix."""
        messages = chat_messages(prompt)
        if self.input_path == "processor":
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, _ = render_jinja_template(conversations=[messages], chat_template=self.chat_template,
                                                add_generation_prompt=True, **self.tokenizer.special_tokens_map)
            text = rendered[0]
        return text + prompt.assistant_prefix

    def build_inputs(self, req: Request) -> dict[str, torch.Tensor]:
        """Model inputs (on CPU) for one request, through the processor or the native builder."""
        if req.frames.ndim != 4 or req.frames.shape[-1] != 3 or req.frames.shape[0] == 0:
            raise FrameError(f"frames must be a non-empty [T, H, W, 3] RGB array, got shape {req.frames.shape}")
        text = self._prompt_text(req.prompt)
        if self.input_path != "processor":
            return NATIVE_BUILDERS[self.family](self.native, req.frames, req.frame_times, text)
        kwargs = dict(self.video_kwargs)
        if kwargs.get("do_resize") is False:  # the processor's patchify needs whole merged patches
            vp = self.processor.video_processor
            check_frames(req.frames, vp.patch_size, vp.merge_size)
        fps = sampled_fps(req.frame_times)
        if fps is not None:  # else the processor assumes 24 fps, as the native builders do
            t = int(req.frames.shape[0])
            kwargs["video_metadata"] = [{"total_num_frames": t, "fps": fps, "frames_indices": list(range(t))}]
        out = self.processor(text=[text], videos=[req.frames], return_tensors="pt", videos_kwargs=kwargs)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def _to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.to(self.device, self.model.dtype) if v.is_floating_point() and k.startswith("pixel")
                    else v.to(self.device)) for k, v in inputs.items()}

    @torch.inference_mode()
    def _one(self, req: Request) -> Prediction:
        t0 = timed()
        inputs = self._to_device(self.build_inputs(req))
        n_in = int(inputs["input_ids"].shape[1])
        n_video = int((inputs["input_ids"] == self.video_token_id).sum())
        with PeakMemory(self.device) as mem:
            t1 = timed()
            out = self.model.generate(**inputs, max_new_tokens=req.max_new_tokens, do_sample=False,
                                      eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        new = out[0, n_in:].tolist()
        text = self.tokenizer.decode([t for t in new if t not in self.eos_ids], skip_special_tokens=True)
        return Prediction(text=text, prompt_tokens=n_in - n_video, video_tokens=n_video, output_tokens=len(new),
                          timings={"preprocess_s": t1 - t0, "generate_total_s": timed() - t1},
                          peak_memory_bytes=mem.peak)

    def generate(self, batch: list[Request]) -> list[Prediction]:
        return [self._one(req) for req in batch]

    def preprocessing(self) -> dict[str, Any]:
        """What was done to the frames before the model (recorded in describe(), JSON-safe)."""
        keys = ("size", "resample", "rescale_factor", "image_mean", "image_std")
        if self.input_path == "processor":
            vp = self.processor.video_processor
            rec = {"video_processor": type(vp).__name__, "call_kwargs": self.video_kwargs,
                   **{k: getattr(vp, k, None) for k in keys}}
        else:
            v = self.native.video
            resize = "none (frames as given)" if self.family == "qwen2_5_vl" else \
                f"{PIL_RESAMPLE.get(int(v.get('resample', 3)))} (antialiased, as torchvision) to {v.get('size')}"
            rec = {"frame_sampling": "none (frames as given)", "resize": resize, **{k: v.get(k) for k in keys[2:]}}
        return json.loads(json.dumps(rec, default=lambda o: dict(o) if hasattr(o, "keys") else str(o)))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_type": self.family, "architecture": type(self.model).__name__,
                "path": str(self.path), "dtype": str(self.model.dtype).replace("torch.", ""),
                "device": str(self.device), "params": count_params(self.model), "attn_implementation": "sdpa",
                "input_path": self.input_path, "preprocessing": self.preprocessing(),
                "interleave_support": "prepended"}
