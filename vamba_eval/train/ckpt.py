"""Checkpoint folders of the training stages, in the official layouts, and the tokenizer beside them.

Qwen2-VL: the official flat config.json (``convert.flat_qwen2vl_config``) + model.safetensors with
the released key names (``visual.*``, ``model.*``, ``lm_head``), loaded back with
``Qwen2VLForConditionalGeneration.from_pretrained`` exactly as the 7B. VAMBA: ``checkpoint.save_pretrained``
/ ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from vamba_eval.models.vamba.convert import _official_key, flat_qwen2vl_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def save_qwen2vl(model: Any, folder: Path, tokenizer: Any, dtype: Optional[str] = None) -> Path:
    """Official Qwen2-VL layout: flat config.json, model.safetensors (released key names), tokenizer."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cast = DTYPES[dtype] if dtype else None
    state = {_official_key(k): (v.to(cast) if cast else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    flat = flat_qwen2vl_config(model.config)
    flat["torch_dtype"] = str(next(iter(state.values())).dtype).replace("torch.", "")
    flat.pop("dtype", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(str(folder))
    return folder


def load_qwen2vl(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The bundled-checkpoint code path of ``--model qwen2vl``."""
    from vamba_eval.models.qwen2vl_adapter import load_qwen2vl as adapter_load

    return adapter_load(Path(folder), dtype).to(device)


def save_vamba(model: Any, folder: Path, tokenizer: Any, dtype: Optional[str] = None) -> Path:
    from vamba_eval.models.vamba.checkpoint import save_pretrained

    if dtype and DTYPES[dtype] != model.dtype:
        model = _cast_copy(model, DTYPES[dtype])
    return save_pretrained(model, Path(folder), tokenizer=tokenizer)


def _cast_copy(model: Any, dtype: torch.dtype) -> Any:
    import copy

    return copy.deepcopy(model).to(dtype)


def load_vamba(folder: Path, device: torch.device | str = "cpu", backend: str = "torch") -> Any:
    from vamba_eval.models.vamba.checkpoint import from_pretrained

    return from_pretrained(Path(folder), device, torch.float32, backend=backend)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
