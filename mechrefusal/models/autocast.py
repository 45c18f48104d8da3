"""`autocast`: run a model in the compute dtype the precision policy chose (`core.precision`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mechrefusal.core.precision import TORCH_DTYPES, resolve
from mechrefusal.models.model import Model


@contextmanager
def autocast(model: Model, dtype: str = "auto") -> Iterator[None]:
    """Run ``model`` under ``torch.autocast`` to the resolved ``dtype`` (float32: unchanged)."""
    chosen = resolve(dtype, model.device).dtype
    if chosen == "float32":
        yield
        return
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.n_layers)]
    hooks = [(name, _zero_nan) for name in names if name in model.bridge.hook_dict]
    with torch.autocast(device_type=model.device.type, dtype=TORCH_DTYPES[chosen]), model.bridge.hooks(fwd_hooks=hooks):
        yield


def _zero_nan(pattern: torch.Tensor, hook) -> torch.Tensor:
    return torch.nan_to_num(pattern, nan=0.0)
