"""`autocast`: run a model in the compute dtype the precision policy chose (`core.precision`); `cast_once`:
on a CPU, each frozen linear layer's weight cast once for a whole context rather than at every call."""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.precision import TORCH_DTYPES, resolve
from mechrefusal.models.model import Model

_GUARDS: weakref.WeakKeyDictionary[torch.nn.Module, Counter[str]] = weakref.WeakKeyDictionary()
"""How many of `autocast`'s NaN guards each bridge's hook points carry (contexts may nest)."""
_SCOPES: weakref.WeakKeyDictionary[torch.nn.Module, dict[torch.nn.Linear, _Cast]] = weakref.WeakKeyDictionary()
"""The casts of each model inside its outermost open `cast_once` context."""


@contextmanager
def autocast(model: Model, dtype: str = "auto") -> Iterator[None]:
    """Run ``model`` under ``torch.autocast`` to the resolved ``dtype`` (float32: unchanged), inside `cast_once`."""
    chosen = resolve(dtype, model.device).dtype
    if chosen == "float32":
        yield
        return
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.n_layers)]
    hooks = [(name, _zero_nan) for name in names if name in model.bridge.hook_dict]
    guards = _GUARDS.setdefault(model.bridge, Counter())
    guards.update(name for name, _ in hooks)
    try:
        with (
            torch.autocast(device_type=model.device.type, dtype=TORCH_DTYPES[chosen]),
            model.bridge.hooks(fwd_hooks=hooks),
            cast_once(model),
        ):
            yield
    finally:
        guards.subtract(name for name, _ in hooks)


def hooked_beyond_autocast(model: Model) -> bool:
    """Whether a hook point of ``model`` carries a hook other than `autocast`'s NaN guards (an intervention's
    or an attack's, which may act per row or position)."""
    guards = _GUARDS.get(model.bridge, Counter())
    return any(
        len(point.fwd_hooks) + len(point.bwd_hooks) > guards[name] for name, point in model.bridge.hook_dict.items()
    )


def _zero_nan(pattern: torch.Tensor, hook) -> torch.Tensor:
    return torch.nan_to_num(pattern, nan=0.0)


@contextmanager
def cast_once(model: Model) -> Iterator[None]:
    """Inside (on a CPU), each frozen linear layer of ``model`` (its weight does not require grad) runs under
    autocast on one cast of its weight, made at its first call and dropped when the outermost context ends;
    results are bit-identical. torch.autocast keeps casts only of weights that require grad, so a frozen
    weight is cast at every call: a frozen model's every forward pass and generated token, and in training
    the reference model and the frozen layers, three times a step (the trainer holds this context for a
    round). Change no frozen weight inside except in place (an in-place change is seen and recast, a
    ``.data`` assignment is not)."""
    root = model.hf_model
    if model.device.type != "cpu" or root in _SCOPES:
        yield
        return
    casts: dict[torch.nn.Linear, _Cast] = {}
    _SCOPES[root] = casts
    patched = [m for m in root.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)]
    for linear in patched:
        linear.forward = partial(_linear_cast_once, linear, casts)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for linear in patched:
            del linear.forward
        del _SCOPES[root]


def _linear_cast_once(
    linear: torch.nn.Linear,
    casts: dict[torch.nn.Linear, _Cast],
    input: Float[Tensor, "... d_in"],  # noqa: A002 (the name `nn.Linear.forward` gives it)
) -> Float[Tensor, "... d_out"]:
    """``linear(input)``, on the context's cast of its weight and bias where autocast is on and the weight is frozen."""
    device = input.device.type
    if not torch.is_autocast_enabled(device) or linear.weight.requires_grad:
        return torch.nn.Linear.forward(linear, input)
    dtype = torch.get_autocast_dtype(device)
    cast = casts.get(linear)
    if cast is None or not cast.made_from(linear, dtype):
        cast = casts[linear] = _Cast.of(linear, dtype)
    return torch.nn.functional.linear(input, cast.weight, cast.bias)


@dataclass(frozen=True, eq=False)
class _Cast:
    """A linear layer's weight and bias cast to ``dtype``, and the tensors and versions they were cast from
    (a version is bumped by every in-place change: ``copy_``, ``load_state_dict``, optimiser steps)."""

    sources: tuple[Tensor, ...]
    versions: tuple[int, ...]
    dtype: torch.dtype
    weight: Tensor
    bias: Tensor | None

    @classmethod
    def of(cls, linear: torch.nn.Linear, dtype: torch.dtype) -> _Cast:
        sources = _sources(linear)
        cast = [source.detach().to(dtype) for source in sources]
        return cls(sources, tuple(s._version for s in sources), dtype, cast[0], cast[1] if len(cast) > 1 else None)

    def made_from(self, linear: torch.nn.Linear, dtype: torch.dtype) -> bool:
        sources = _sources(linear)
        return (
            dtype == self.dtype
            and len(sources) == len(self.sources)
            and all(now is then for now, then in zip(sources, self.sources))
            and tuple(s._version for s in sources) == self.versions
        )


def _sources(linear: torch.nn.Linear) -> tuple[Tensor, ...]:
    return (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)
