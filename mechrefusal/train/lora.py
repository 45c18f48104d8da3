"""LoRA through peft, as an alternative to full fine-tuning of a layer band.

The bridge wraps every Hugging Face ``nn.Linear`` of a decoder layer in a ``LinearBridge`` whose forward
calls the wrapped module, so peft's LoRA layers are injected in place of those wrapped modules: the
bridge's hooks (and the trainer's ablations) stay where they were. After a round the adapters are merged
into the weights and removed, so checkpoints keep the plain Hugging Face layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from transformers.pytorch_utils import Conv1D

from mechrefusal.core.errors import SettingError
from mechrefusal.models import Model
from mechrefusal.models.export import component_mapping, component_name


def add_lora(
    model: Model, layers: Sequence[int], rank: int, *, alpha: float | None = None, seed: int = 0
) -> list[torch.nn.Parameter]:
    """Inject rank-``rank`` LoRA adapters into every linear map of ``layers``; return their parameters
    (the only ones left trainable). ``alpha`` defaults to ``2 * rank``; ``seed`` fixes their init."""
    if rank < 1:
        raise SettingError(f"LoRA rank must be at least 1, got {rank}.")
    if not layers:
        raise SettingError("LoRA needs at least one decoder layer to adapt.")
    names = _linear_names(model, layers)
    if not names:
        raise SettingError(f"No linear layer to adapt in layers {list(layers)} of {model.spec}.")
    pattern = "|".join(re.escape(name) for name in names)
    scale = alpha or 2 * rank
    config = LoraConfig(r=rank, lora_alpha=scale, lora_dropout=0.0, target_modules=pattern)  # type: ignore[arg-type]
    for parameter in model.hf_model.parameters():
        parameter.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model.hf_model)
    for adapter in _lora_layers(model):
        cast(torch.nn.Module, adapter).to(model.device)
    return [parameter for name, parameter in model.hf_model.named_parameters() if "lora_" in name]


def merge_lora(model: Model) -> int:
    """Fold every LoRA adapter into its base weight and put the plain linear layer back; returns how many."""
    merged = 0
    for name, module in list(model.hf_model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.hf_model.get_submodule(parent_name), child, module.get_base_layer())
            merged += 1
    return merged


def _linear_names(model: Model, layers: Sequence[int]) -> list[str]:
    """Module names of every linear map (``nn.Linear``, or GPT-2's ``Conv1D``) of ``layers`` as the bridge
    nests them inside the Hugging Face model (``model.layers.N`` in Llama, ``transformer.h.N`` in GPT-2). A
    fused QKV projection is left out: the bridge splits it at load into separate q, k and v maps (sharing
    its storage), and those run in the forward pass, not it."""
    blocks = component_name(component_mapping(model)["blocks"])
    prefixes = tuple(f"{blocks}.{layer}." for layer in layers)
    return [
        name
        for name, module in model.hf_model.named_modules()
        if name.startswith(prefixes) and isinstance(module, (torch.nn.Linear, Conv1D)) and ".qkv." not in name
    ]


def _lora_layers(model: Model) -> list[LoraLayer]:
    return [module for module in model.hf_model.modules() if isinstance(module, LoraLayer)]
