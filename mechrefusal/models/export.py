"""Writing a bridged model back out as a plain Hugging Face directory.

The bridge swaps its own components into the HF module tree, so ``hf_model.state_dict()`` holds each
weight under several wrapped names and ``save_pretrained`` refuses it. `hf_state_dict` recovers the
plain HF names; `save_hf_directory` writes them with the tokenizer.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
from torch import Tensor

from mechrefusal.core.errors import CheckpointError, ModelLoadError
from mechrefusal.models.model import Model


def hf_state_dict(model: Model) -> dict[str, Tensor]:
    """The model's weights under their Hugging Face names (tensors shared, not copied)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model.hf_model.config)
    expected = skeleton.state_dict().keys()
    clean: dict[str, Tensor] = {}
    for key, value in model.hf_model.state_dict().items():
        name = key.replace("._original_component", "")
        if name in expected and name not in clean:
            clean[name] = value
    missing = sorted(set(expected) - clean.keys())
    if missing:
        raise CheckpointError(f"Could not map the bridged weights back to Hugging Face names; missing {missing[:5]}.")
    return clean


def weights_digest(model: Model) -> hashlib._Hash:
    """A SHA-256 fed with a cheap fingerprint of the weights (each tensor's name, sum and first 64 values), for
    cache keys of what a model generated; feed it the rest of the key and take ``hexdigest()``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(hf_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(float(tensor.detach().float().sum().item()).hex().encode())
        digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest


def save_hf_directory(
    model: Model, directory: str | Path, *, state_dict: dict[str, Tensor] | None = None, config=None
) -> None:
    """Write ``state_dict`` (default: the model's own weights) with ``config`` and the tokenizer."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    config = copy.deepcopy(config or model.hf_model.config)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    skeleton.load_state_dict(state_dict or hf_state_dict(model), assign=True, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        skeleton.tie_weights()
    hf_logging.disable_progress_bar()
    try:
        skeleton.save_pretrained(directory)
    finally:
        hf_logging.enable_progress_bar()
    model.tokenizer.save_pretrained(directory)


def residual_writer_names(model: Model) -> tuple[list[str], list[str]]:
    """HF parameter prefixes of the embeddings (token, and positional where the architecture has one) and of
    every module that writes into the residual stream (attention output and MLP output projections), from
    the bridge's architecture adapter."""
    mapping = component_mapping(model)
    blocks = mapping["blocks"]
    attn, mlp = blocks.submodules["attn"], blocks.submodules["mlp"]
    writers = [f"{blocks.name}.{layer}.{attn.name}.{attn.submodules['o'].name}" for layer in range(model.n_layers)]
    writers += [f"{blocks.name}.{layer}.{mlp.name}.{mlp.submodules['out'].name}" for layer in range(model.n_layers)]
    embeddings = [component_name(mapping[name]) for name in ("embed", "pos_embed") if name in mapping]
    return embeddings, writers


def unembed_name(model: Model) -> str:
    return component_name(component_mapping(model)["unembed"])


def component_mapping(model: Model) -> dict:
    """The bridge adapter's map from TransformerLens component names to the HF modules they wrap."""
    mapping = model.bridge.adapter.component_mapping
    if mapping is None:
        raise ModelLoadError(f"The bridge of {model.spec!r} has no component mapping to find its weights by.")
    return mapping


def component_name(component) -> str:
    if component.name is None:
        raise ModelLoadError(f"The bridge component {component!r} names no HF module.")
    return component.name
