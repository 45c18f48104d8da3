"""`autocast`: run a model in the compute dtype the precision policy chose (`core.precision`), each linear
layer's weight cast once rather than at every call on a CPU."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.precision import TORCH_DTYPES, resolve
from mechrefusal.models.model import Model

_KEPT: weakref.WeakKeyDictionary[torch.nn.Linear, _Kept] = weakref.WeakKeyDictionary()
"""Each linear layer's kept low-precision weight and bias."""
_DEPTH: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
"""How many `autocast` contexts are open on each model (the outermost one installs and removes `_cast_once`)."""


@contextmanager
def autocast(model: Model, dtype: str = "auto") -> Iterator[None]:
    """Run ``model`` under ``torch.autocast`` to the resolved ``dtype`` (float32: unchanged)."""
    chosen = resolve(dtype, model.device).dtype
    if chosen == "float32":
        yield
        return
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.n_layers)]
    hooks = [(name, _zero_nan) for name in names if name in model.bridge.hook_dict]
    with (
        torch.autocast(device_type=model.device.type, dtype=TORCH_DTYPES[chosen]),
        model.bridge.hooks(fwd_hooks=hooks),
        _cast_once(model.hf_model) if model.device.type == "cpu" else _nothing(),
    ):
        yield


def _zero_nan(pattern: torch.Tensor, hook) -> torch.Tensor:
    return torch.nan_to_num(pattern, nan=0.0)


@contextmanager
def _cast_once(root: torch.nn.Module) -> Iterator[None]:
    """Inside: ``root``'s linear layers run on a kept low-precision copy of their weights wherever the weight
    needs no gradient (frozen, or under ``torch.no_grad``). torch.autocast casts such a weight at every call
    (it keeps only casts of weights that require grad, and only until its context ends): on a CPU that is a
    tenth of a training step, and a frozen model's every forward pass. The copy is kept while its weight is
    unchanged (same tensor and version counter) and the model lives; results are bit-identical."""
    depth = _DEPTH.get(root, 0)
    _DEPTH[root] = depth + 1
    patched = [] if depth else [m for m in root.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)]
    for linear in patched:
        linear.forward = partial(_linear_cast_once, linear)  # type: ignore[method-assign]
    try:
        yield
    finally:
        _DEPTH[root] = depth
        for linear in patched:
            del linear.forward


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _linear_cast_once(linear: torch.nn.Linear, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
    """``linear(x)``, on the kept cast of its weight and bias where autocast is on and no gradient flows to them."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or (torch.is_grad_enabled() and linear.weight.requires_grad):
        return torch.nn.Linear.forward(linear, x)
    dtype = torch.get_autocast_dtype(device)
    kept = _KEPT.get(linear)
    if kept is None or not kept.cast_from(linear, dtype):
        kept = _KEPT[linear] = _Kept.of(linear, dtype)
    return torch.nn.functional.linear(x, kept.weight, kept.bias)


@dataclass(frozen=True, eq=False)
class _Kept:
    """A linear layer's weight and bias cast to ``dtype``, and the tensors and versions they were cast from
    (a version is bumped by every in-place change: optimiser steps, ``copy_``, loading)."""

    sources: tuple[Tensor, ...]
    versions: tuple[int, ...]
    dtype: torch.dtype
    weight: Tensor
    bias: Tensor | None

    @classmethod
    def of(cls, linear: torch.nn.Linear, dtype: torch.dtype) -> _Kept:
        sources = _sources(linear)
        cast = [source.detach().to(dtype) for source in sources]
        return cls(sources, tuple(s._version for s in sources), dtype, cast[0], cast[1] if len(cast) > 1 else None)

    def cast_from(self, linear: torch.nn.Linear, dtype: torch.dtype) -> bool:
        sources = _sources(linear)
        return (
            dtype == self.dtype
            and len(sources) == len(self.sources)
            and all(now is then for now, then in zip(sources, self.sources))
            and tuple(s._version for s in sources) == self.versions
        )


def _sources(linear: torch.nn.Linear) -> tuple[Tensor, ...]:
    return (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)
