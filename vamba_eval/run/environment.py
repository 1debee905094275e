"""What a run records about where it ran: git sha, package versions, device, Python."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("vamba-eval", "torch", "transformers", "tokenizers", "av", "numpy", "pandas", "scipy", "pydantic",
            "safetensors", "fla-core", "mamba-ssm", "causal-conv1d", "ray", "openai")


def git_sha(path: Optional[Path] = None) -> Optional[str]:
    root = path or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    if not sha:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"requested": device, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
    else:
        info.update(name=platform.processor() or platform.machine(), cpu=True)
    return info


def environment(device: str) -> dict[str, Any]:
    return {"git_sha": git_sha(), "packages": package_versions(), "python": platform.python_version(),
            "platform": platform.platform(), "device": device_info(device)}
