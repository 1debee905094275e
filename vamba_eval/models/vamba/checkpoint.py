"""Checkpoint I/O in the official layout: config.json + (sharded) safetensors, official key names.

Loading is strict (missing/unexpected keys and wrong shapes are one error listing them all) and
never holds two copies: the model's parameters are built on the meta device, materialised once on the
target device in the target dtype, and each shard is opened straight onto that device and copied in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from vamba_eval.models.vamba.backends import SSMBackend, select_backend
from vamba_eval.models.vamba.config import VambaConfig
from vamba_eval.models.meta import materialize, params_on_meta
from vamba_eval.models.vamba.modeling import VambaForConditionalGeneration

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """The checkpoint folder does not match the model; the message lists what and how to fix it."""


def shard_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, in index order; missing shards are an error."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{index}: lists shards that are not in the folder: {', '.join(missing)}. "
                                  "Download the missing files (the folder must be complete).")
        return [folder / n for n in names]
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise CheckpointError(f"{folder}: no *.safetensors files (expected {INDEX_NAME} + shards or {SINGLE_NAME})")
    return found


def _check_keys(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if not (missing or unexpected or wrong):
        return
    lines = [f"{folder}: checkpoint does not match config.json"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:20]) + (" …" if len(missing) > 20 else ""))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20])
                     + (" …" if len(unexpected) > 20 else ""))
    for k in wrong[:20]:
        lines.append(f"  wrong shape {k}: config gives {list(expected[k])}, file has {list(shapes[k])}")
    if any("vision_mixer" in k for k in wrong):
        lines.append("  hint: the mixer shapes follow vision_mamba_mixer_config (d_state, headdim, expand, ngroups); "
                     "make config.json match the weights")
    raise CheckpointError("\n".join(lines))


def _read_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    shapes[k] = tuple(st.get_slice(k).get_shape())
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{f}: not a readable safetensors file ({err}); re-download it") from None
    return shapes


def from_pretrained(folder: Path, device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None,
                    backend: Optional[SSMBackend | str] = None) -> VambaForConditionalGeneration:
    """Load a VAMBA checkpoint folder (the official 7B or our tiny ones) strictly."""
    from safetensors import safe_open

    folder, device = Path(folder), torch.device(device)
    cfg = VambaConfig.from_file(folder)
    dtype = dtype or getattr(torch, str(cfg.raw.get("torch_dtype", "float32")).replace("torch.", ""), torch.float32)
    files = shard_files(folder)
    with params_on_meta():
        model = VambaForConditionalGeneration(cfg, backend=select_backend(None, "cpu"))
    _check_keys(model, _read_shapes(files), folder)
    materialize(model, device, dtype)
    params = model.state_dict()
    for f in files:
        with safe_open(str(f), framework="pt", device=str(device)) as st:
            for k in st.keys():
                t = st.get_tensor(k)
                if not t.is_floating_point():
                    raise CheckpointError(f"{f}: tensor {k} has dtype {t.dtype}; expected floating point weights")
                with torch.no_grad():
                    params[k].copy_(t)
                del t
    if isinstance(backend, str) or backend is None:
        backend = select_backend(backend, device)
    model.set_ssm_backend(backend)
    return model.eval()


def save_pretrained(model: VambaForConditionalGeneration, folder: Path, max_shard_bytes: int = 5 * 2**30,
                    tokenizer: Any = None) -> Path:
    """Write config.json + safetensors shards (+ index when sharded) with the official key names."""
    from safetensors.torch import save_file

    if getattr(model, "inference_only", False):
        raise CheckpointError("this model was loaded for inference with the last layer's unused video mixer "
                              "released (release_unused_video_mixer), so its checkpoint would lack those keys; "
                              "load it again with from_pretrained (which keeps every weight) to save it")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        nbytes = state[k].numel() * state[k].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += nbytes
    dtype_name = str(next(iter(state.values())).dtype).replace("torch.", "")
    model.config.replace(torch_dtype=dtype_name).save(folder)
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_NAME), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(v.numel() * v.element_size() for v in state.values())
        (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                    indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


__all__ = ["CheckpointError", "from_pretrained", "save_pretrained", "shard_files"]
