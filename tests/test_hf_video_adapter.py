"""``--model hf-video`` on tiny random Qwen2.5-VL and LLaVA-OneVision folders, loaded like real checkpoints.

torchvision cannot be installed beside this torch, and every `transformers` 5.x video processor needs it,
so the processor's video path cannot run here. What these tests check instead:

* the native inputs against the model's REAL processor class (``Qwen2_5_VLProcessor`` /
  ``LlavaOnevisionProcessor``: chat template, placeholder expansion, tokenization, ``mm_token_type_ids``,
  ``second_per_grid_ts``), with a stand-in video processor whose pixels come from `transformers`' PIL
  image processors (frames are given in identical pairs for Qwen so that an image equals a temporal patch);
* the odd-frame-count padding and the LLaVA resize by hand;
* the adapter end to end on the native path (load, generate, determinism, token counts, describe());
* the error paths (no --model-path, unknown family without torchvision).

The processor-vs-native comparison through ``AutoProcessor`` runs only where torchvision is installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from transformers.utils import PushToHubMixin

from vamba_eval.models import hf_video_adapter as hv
from vamba_eval.models.base import ModelSpec, qwen_chat
from vamba_eval.models.vamba.vision import IMAGE_MEAN, IMAGE_STD
from vamba_eval.types import Prompt, Request

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_TEMPLATE = (  # the layout of llava-hf/llava-onevision-qwen2-*-ov-hf's template
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CLIP = {"image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD)}
QWEN_VIDEO = {"video_processor_type": "Qwen2VLVideoProcessor", "do_resize": True, "resample": 3,
              "size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, **CLIP, "patch_size": 14, "temporal_patch_size": 2,
              "merge_size": 2, "do_sample_frames": False}
LLAVA_SIZE = 42  # SigLIP 42/14 = 3×3 patches → ⌈3/2⌉² = 4 tokens per frame
LLAVA_VIDEO = {"video_processor_type": "LlavaOnevisionVideoProcessor", "do_resize": True, "resample": 3,
               "size": {"height": LLAVA_SIZE, "width": LLAVA_SIZE}, "do_rescale": True, "rescale_factor": 1 / 255,
               "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_sample_frames": False}
PROMPT = Prompt(user="What happens?", system="Be brief.", assistant_prefix="Answer:")


def frames(t: int = 4, h: int = 56, w: int = 84, seed: int = 0, pairs: bool = False) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB: gradients plus noise; ``pairs`` repeats each frame twice (Qwen temporal patch)."""
    rng = np.random.default_rng(seed)
    n = (t + 1) // 2 if pairs else t
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 3 + yy * k * 7) % 256 for k in range(n)])[..., None] + rng.integers(0, 60, (n, h, w, 3))
    out = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(out, 2, axis=0)[:t] if pairs else out


def request(video: np.ndarray, fps: float = 2.0, new: int = 5) -> Request:
    return Request("s1", video, tuple(i / fps for i in range(len(video))), PROMPT, max_new_tokens=new)


def summary(pred: Any) -> tuple:
    """A Prediction without its timings."""
    return pred.text, pred.prompt_tokens, pred.video_tokens, pred.output_tokens


class StandInVideoProcessor(PushToHubMixin):
    """Stands in for the torchvision video processor inside the real Processor: pixels from the PIL image
    processor, settings saved under the real class name (so torchvision machines load the real one)."""

    def __init__(self, settings: dict[str, Any], pixels: Any) -> None:
        self.settings, self.pixels, self._auto_class = settings, pixels, None
        for key in ("patch_size", "temporal_patch_size", "merge_size"):
            setattr(self, key, settings.get(key))

    def __call__(self, videos: list[np.ndarray], **kwargs: Any) -> Any:
        from transformers import BatchFeature
        from transformers.video_utils import make_batched_metadata

        data = self.pixels(videos[0])
        data["video_metadata"] = make_batched_metadata(videos, kwargs.get("video_metadata"))
        return BatchFeature(data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.settings)


def qwen_pil_pixels(video: np.ndarray) -> dict[str, Any]:
    """Video patches from Qwen2VLImageProcessorPil: one image per (identical) temporal pair."""
    from transformers import Qwen2VLImageProcessorPil

    assert len(video) % 2 == 0 and (video[0::2] == video[1::2]).all()
    out = [Qwen2VLImageProcessorPil()(images=[f], do_resize=False, return_tensors="pt") for f in video[0::2]]
    grid = out[0]["image_grid_thw"][0].tolist()
    return {"pixel_values_videos": torch.cat([o["pixel_values"] for o in out]),
            "video_grid_thw": torch.tensor([[len(out), grid[1], grid[2]]])}


def llava_pil_pixels(video: np.ndarray) -> dict[str, Any]:
    """Per frame, the base (whole-image) patch of LlavaOnevisionImageProcessorPil: PIL resize + normalise."""
    from transformers import LlavaOnevisionImageProcessorPil

    ip = LlavaOnevisionImageProcessorPil(size=LLAVA_VIDEO["size"], image_mean=[0.5] * 3, image_std=[0.5] * 3)
    base = [ip(images=[f], return_tensors="pt")["pixel_values"][0, 0] for f in video]  # [3, S, S] each
    return {"pixel_values_videos": torch.stack(base)[None]}  # [1, T, 3, S, S]


def tiny_qwen(vocab: int) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_parameters=rope, bos_token_id=256, eos_token_id=258, pad_token_id=256),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0], window_size=56, tokens_per_second=2),
        image_token_id=262, video_token_id=263, vision_start_token_id=259, vision_end_token_id=260)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def tiny_llava(vocab: int, image_id: int, video_id: int) -> Any:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    torch.manual_seed(0)
    cfg = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=LLAVA_SIZE, patch_size=14,
                           vision_use_head=False),
        text_config=dict(model_type="qwen2", vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         bos_token_id=256, eos_token_id=258, pad_token_id=256),
        image_token_index=image_id, video_token_index=video_id, vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=[[42, 42], [42, 84], [84, 42], [84, 84]])
    return LlavaOnevisionForConditionalGeneration(cfg).eval()


def build_processor(family: str, tokenizer: Any) -> Any:
    """The model's real Processor class, with the PIL image processor and the stand-in video processor."""
    from transformers import (LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessorPil)
    from transformers.processing_utils import ProcessorMixin

    with pytest.MonkeyPatch.context() as mp:  # the stand-in is not a BaseVideoProcessor (that needs torchvision)
        mp.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
        if family == "qwen2_5_vl":
            return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer,
                                       video_processor=StandInVideoProcessor(QWEN_VIDEO, qwen_pil_pixels),
                                       chat_template=QWEN_TEMPLATE)
        image = LlavaOnevisionImageProcessorPil(size=LLAVA_VIDEO["size"], image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                                image_grid_pinpoints=[[42, 42], [42, 84], [84, 42], [84, 84]])
        return LlavaOnevisionProcessor(image_processor=image, tokenizer=tokenizer,
                                       video_processor=StandInVideoProcessor(LLAVA_VIDEO, llava_pil_pixels),
                                       num_image_tokens=9, vision_feature_select_strategy="full",
                                       chat_template=LLAVA_TEMPLATE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """{family: (folder, processor)}: random tiny models saved with save_pretrained beside their processor."""
    from vamba_eval.models.tokenizer import build_byte_tokenizer

    qtok = build_byte_tokenizer()
    ltok = build_byte_tokenizer()
    ltok.add_tokens(["<image>", "<video>"], special_tokens=True)  # ids 264, 265
    models = {"qwen2_5_vl": (tiny_qwen(len(qtok)), qtok),
              "llava_onevision": (tiny_llava(len(ltok), *ltok.convert_tokens_to_ids(["<image>", "<video>"])), ltok)}
    out = {}
    for family, (model, tok) in models.items():
        folder = tmp_path_factory.mktemp(family)
        processor = build_processor(family, tok)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[family] = (folder, processor)
    return out


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on this machine: no torchvision, so the adapter must take the native path."""
    monkeypatch.setattr(hv, "torchvision_available", lambda: False)


def processor_inputs(processor: Any, req: Request) -> dict[str, torch.Tensor]:
    """The real Processor (stand-in video processor) on the same chat and frames as the adapter."""
    text = processor.apply_chat_template(hv.chat_messages(req.prompt), add_generation_prompt=True, tokenize=False)
    meta = [{"total_num_frames": len(req.frames), "fps": hv.sampled_fps(req.frame_times),
             "frames_indices": list(range(len(req.frames)))}]
    out = processor(text=[text + req.prompt.assistant_prefix], videos=[req.frames], return_tensors="pt",
                    videos_kwargs={"do_sample_frames": False, "video_metadata": meta})
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def test_native_qwen_inputs_equal_the_real_processor(tiny, native):
    folder, processor = tiny["qwen2_5_vl"]
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(folder)))
    req = request(frames(4, pairs=True), fps=2.0)
    got, ref = adapter.build_inputs(req), processor_inputs(processor, req)
    assert sorted(got) == sorted(ref) == ["attention_mask", "input_ids", "mm_token_type_ids",
                                          "pixel_values_videos", "second_per_grid_ts", "video_grid_thw"]
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        assert torch.equal(got[key], ref[key]), key
    assert got["video_grid_thw"].tolist() == [[2, 4, 6]]  # 4 frames of 56×84, 14-px patches
    assert int((got["input_ids"] == 263).sum()) == 2 * 2 * 3  # t · (h/2) · (w/2)
    assert torch.allclose(got["second_per_grid_ts"], ref["second_per_grid_ts"]) and \
        float(got["second_per_grid_ts"]) == pytest.approx(1.0)  # 2 frames at 2 fps
    assert torch.allclose(got["pixel_values_videos"], ref["pixel_values_videos"].float(), atol=1e-5)


def test_native_qwen_prompt_is_the_projects_qwen_template(tiny, native):
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(tiny["qwen2_5_vl"][0])))
    assert adapter._prompt_text(PROMPT) == qwen_chat(PROMPT, "<|video_pad|>")


def test_native_qwen_odd_frame_count_repeats_the_last_frame(tiny, native):
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(tiny["qwen2_5_vl"][0])))
    video = frames(3)
    got = adapter.build_inputs(request(video, fps=4.0))
    padded = adapter.build_inputs(request(np.concatenate([video, video[-1:]]), fps=4.0))
    assert got["video_grid_thw"].tolist() == [[2, 4, 6]]
    assert torch.equal(got["pixel_values_videos"], padded["pixel_values_videos"])
    assert float(got["second_per_grid_ts"]) == pytest.approx(0.5)  # temporal patch 2 / 4 fps
    one = adapter.build_inputs(request(video[:1]))
    assert float(one["second_per_grid_ts"]) == pytest.approx(2 / hv.DEFAULT_FPS)  # no spacing: processor's 24 fps


@pytest.mark.parametrize("size", [(LLAVA_SIZE, LLAVA_SIZE), (56, 84)])
def test_native_llava_inputs_equal_the_real_processor(tiny, native, size):
    folder, processor = tiny["llava_onevision"]
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(folder)))
    req = request(frames(4, *size))
    got, ref = adapter.build_inputs(req), processor_inputs(processor, req)
    assert sorted(got) == sorted(ref) == ["attention_mask", "input_ids", "pixel_values_videos"]
    assert torch.equal(got["input_ids"], ref["input_ids"])
    assert int((got["input_ids"] == 265).sum()) == 4 * math.ceil(3 / 2) ** 2 + 1
    assert got["pixel_values_videos"].shape == (1, 4, 3, LLAVA_SIZE, LLAVA_SIZE)
    diff = (got["pixel_values_videos"] - ref["pixel_values_videos"].float()).abs()
    if size == (LLAVA_SIZE, LLAVA_SIZE):  # no resize: rescale + normalise (mean/std 0.5 from the config) exact
        assert float(diff.max()) < 1e-6
    else:  # torch antialiased bicubic (torchvision's CPU kernel) vs PIL bicubic: same image, a few levels apart
        assert float(diff.mean()) < 0.05 / 127.5 and float(diff.max()) < 1.01 / 127.5  # seen: 0.003, 1 level


def test_resize_like_torchvision_matches_the_float_path_within_rounding():
    x = torch.from_numpy(frames(2)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
    assert hv.resize_like_torchvision(x, (56, 84), "bicubic") is x  # same size: untouched, as torchvision
    y = hv.resize_like_torchvision(x, (42, 42), "bicubic")
    ref = torch.nn.functional.interpolate(x.float(), size=[42, 42], mode="bicubic", antialias=True)
    assert y.dtype == torch.uint8 and y.shape == (2, 3, 42, 42)
    assert float((y.float() - ref.clamp(0, 255)).abs().mean()) < 1.0


@pytest.mark.parametrize("family,n_video", [("qwen2_5_vl", 12), ("llava_onevision", 17)])
def test_adapter_generates_deterministically(tiny, native, family, n_video):
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(tiny[family][0])))
    req = request(frames(4, pairs=True), new=6)
    first, second = adapter.generate([req, req])
    assert summary(first) == summary(second)
    assert first.video_tokens == n_video and first.prompt_tokens > 0
    assert 1 <= first.output_tokens <= 6 and isinstance(first.text, str)
    assert set(first.timings) == {"preprocess_s", "generate_total_s"} and first.peak_memory_bytes is None
    desc = adapter.describe()
    assert desc["input_path"] == f"native:{family}" and desc["model_type"] == family
    assert desc["name"] == "hf-video" and desc["dtype"] == "float32" and desc["device"] == "cpu"
    assert desc["params"] > 0 and json.loads(json.dumps(desc)) == desc


def test_missing_model_path_is_a_clear_error():
    with pytest.raises(ValueError, match="--model-path"):
        hv.HFVideoAdapter(ModelSpec("hf-video"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hv.HFVideoAdapter(ModelSpec("hf-video", str(tmp_path)))


def test_unknown_family_without_torchvision_says_install_torchvision(tmp_path, native):
    from transformers import Qwen2VLConfig

    from vamba_eval.models.vamba.tiny import tiny_qwen2vl_config

    Qwen2VLConfig(**tiny_qwen2vl_config(layers=1)).save_pretrained(tmp_path)  # qwen2_vl: no native builder
    with pytest.raises(RuntimeError, match="torchvision") as err:
        hv.HFVideoAdapter(ModelSpec("hf-video", str(tmp_path)))
    assert "qwen2_vl" in str(err.value)


def test_settings_and_template_from_a_hub_style_folder(tmp_path):
    """Released checkpoints keep preprocessor_config.json + chat_template.json (no nested processor_config)."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "legacy"}))
    (tmp_path / "chat_template.jinja").write_text("raw")
    assert hv.read_chat_template(tmp_path) == "legacy"  # ProcessorMixin's priority
    settings = hv.video_settings(tmp_path, "llava_onevision")
    assert settings["image_mean"] == [0.5] * 3 and settings["size"] == {"height": 384, "width": 384}
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1] * 3}))
    assert hv.video_settings(tmp_path, "llava_onevision")["image_mean"] == [0.1] * 3
    (tmp_path / "chat_template.json").unlink()
    assert hv.read_chat_template(tmp_path) == "raw"


def test_registry_has_hf_video():
    from vamba_eval.registry import MODELS, get_model_factory

    assert get_model_factory("hf-video") is hv.HFVideoAdapter and "--model-path" in MODELS["hf-video"][0]


@pytest.mark.skipif(not hv.torchvision_available(),
                    reason="torchvision not installed: transformers 5.x video processors need it, so the "
                           "processor path can only be compared with the native builders where it is")
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_processor_path_equals_native_path(tiny, family):
    folder = str(tiny[family][0])
    proc = hv.HFVideoAdapter(ModelSpec("hf-video", folder), input_path="processor")
    nat = hv.HFVideoAdapter(ModelSpec("hf-video", folder), input_path="native")
    req = request(frames(4, pairs=True))
    got, ref = nat.build_inputs(req), proc.build_inputs(req)
    assert sorted(got) == sorted(ref)
    for key in got:
        assert torch.allclose(got[key].float(), ref[key].float(), atol=1e-5), key
    assert summary(proc.generate([req])[0]) == summary(nat.generate([req])[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family,n_video", [("qwen2_5_vl", 12), ("llava_onevision", 17)])
def test_adapter_on_cuda_in_bfloat16(tiny, family, n_video):
    adapter = hv.HFVideoAdapter(ModelSpec("hf-video", str(tiny[family][0]), device="cuda", dtype="bfloat16"))
    first, second = adapter.generate([request(frames(4, pairs=True))] * 2)
    assert first.video_tokens == n_video and first.peak_memory_bytes and summary(first) == summary(second)
    assert adapter.describe()["dtype"] == "bfloat16" and adapter.describe()["device"] == "cuda"
