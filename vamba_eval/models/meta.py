"""Build big models without host copies: parameters on the meta device, buffers real.

``params_on_meta()`` is a context in which new ``nn.Parameter``s land on the meta device while
buffers (rotary tables, computed in ``__init__``) keep their real values; ``materialize`` then
allocates every parameter once, directly on the target device and dtype. Weights come next, from
a checkpoint (``checkpoint.from_pretrained``) or a random init (``init_weights``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            kwargs = {"requires_grad": param.requires_grad}
            module._parameters[name] = type(param)(param.to(torch.device("meta")), **kwargs)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def materialize(model: nn.Module, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Allocate (uninitialised) every meta parameter on ``device`` in ``dtype``; move buffers there."""
    device = torch.device(device)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            t = torch.empty(p.shape, device=device, dtype=dtype) if p.device.type == "meta" else p.data.to(device, dtype)
            module._parameters[name] = nn.Parameter(t, requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.to(device)
    return model
