"""Versions of everything a number depends on, recorded next to every result."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from importlib import metadata

import torch


def versions() -> dict[str, str]:
    """Python, mechrefusal and the numeric libraries' versions."""
    found = {"python": platform.python_version()}
    for package in ("mechrefusal", "torch", "transformers", "transformer_lens"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def prompts_sha256(prompts: Sequence[str]) -> str:
    """A hash identifying an ordered list of prompts (the data behind a direction)."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A cheap identity of a module's weights: each parameter's shape, float64 sum and first values."""
    digest = hashlib.sha256()
    for name, parameter in module.named_parameters():
        values = parameter.detach().flatten()
        digest.update(f"{name}{tuple(parameter.shape)}{float(values.double().sum().item()).hex()}".encode())
        digest.update(values[:32].float().cpu().numpy().tobytes())
    return digest.hexdigest()
