"""Training on several processes (``torchrun``) with torch.distributed, and activation checkpointing.

Every process trains on its share of each micro-batch; the processes' mean gradient is then the
one-process gradient. ``ddp`` keeps a full replica per process (DistributedDataParallel around the
bridge, so the forward runs through DDP's wrapper while the TransformerLens hooks of the wrapped bridge
still fire); ``fsdp`` shards weights, gradients and AdamW state (FSDP2 ``fully_shard`` per decoder
layer, then the rest of the model). After a round every process holds the full, plain model again: the
direction search, the evaluation and the checkpoint read it.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import cast

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from mechrefusal.models import Model, load
from mechrefusal.models.export import hf_state_dict


def init_distributed(device: torch.device) -> None:
    """Join the process group when started by ``torchrun`` (gloo on the CPU; NCCL, one GPU per process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # before loading: "cuda" means this GPU
        torch.distributed.init_process_group("nccl")
    else:
        torch.distributed.init_process_group("gloo")


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``; (0, 1) in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Parallel:
    """One round's data parallelism over the processes (nothing in a single process).

    Construct it after choosing the trainable parameters (DDP and FSDP take those that require a
    gradient); run forward passes through ``forward``, each micro-batch inside ``micro_batch``, and
    call ``end`` after the round.
    """

    def __init__(self, model: Model, mode: str) -> None:
        self.model = model
        world = distributed_rank_and_size()[1]
        self.mode = mode if world > 1 else "single"
        self.forward: Callable = model.bridge
        if self.mode == "ddp":
            # Every trainable parameter (a layer band or LoRA adapters) takes part in every forward
            # pass, so DDP needs no search for unused ones; frozen ones are not DDP's business.
            self.forward = torch.nn.parallel.DistributedDataParallel(model.bridge, forward_sync_buffers=False)
        elif self.mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(model.device.type, (world,))
            for block in model.bridge.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model.hf_model, mesh=mesh)  # the root: embedding, final norm, unembedding
            # The logits are a slice of the unembedding's output; nothing here changes them in place.
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters as the optimiser must see them (FSDP swaps in sharded ones)."""
        return [parameter for parameter in self.model.bridge.parameters() if parameter.requires_grad]

    @contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        """Gradient accumulation: the backward pass of every micro-batch but the ``last`` of a step
        keeps its gradients local; the last one averages the accumulated sum over the processes."""
        if last or self.mode == "single":
            yield
        elif self.mode == "ddp":
            with cast(torch.nn.parallel.DistributedDataParallel, self.forward).no_sync():
                yield
        else:
            cast(FSDPModule, self.model.hf_model).set_requires_gradient_sync(False)
            try:
                yield
            finally:
                cast(FSDPModule, self.model.hf_model).set_requires_gradient_sync(True)

    def end(self) -> None:
        """Leave every process with the plain full model (FSDP: gathered; DDP: its wrapper dropped)."""
        if self.mode == "fsdp":
            _unshard(self.model)
        self.forward = self.model.bridge


def _unshard(model: Model) -> None:
    """Give ``model`` a plain bridge holding its FSDP-sharded weights in full, gathered one tensor at a
    time into a fresh load of ``model.spec`` (FSDP2 cannot be undone in place). Only training needs
    the sharding: AdamW's fp32 state and gradients take 12 bytes a parameter more than the weights."""
    fresh = load(model.spec, device=model.device, dtype=model.dtype, system=model.chat.system)
    full = hf_state_dict(fresh)
    with torch.no_grad():
        for name, value in hf_state_dict(model).items():
            full[name].copy_(value.full_tensor() if isinstance(value, DTensor) else value)
    model.bridge = fresh.bridge


@contextmanager
def activation_checkpointing(model: Model, enabled: bool = True) -> Iterator[None]:
    """Within the block, keep only each decoder layer's input in the forward pass and recompute the
    layer in the backward pass (non-reentrant ``torch.utils.checkpoint``). The recomputation runs under
    the hooks that were active in the forward pass (an ablation's context has closed by the time the
    loss is differentiated; without them a recomputed layer would differ), and those hooks run twice,
    so they must give the same result each time (``Ablate`` does; ``RandomAblate`` does not)."""
    blocks = list(model.bridge.blocks) if enabled else []
    for block in blocks:
        forward = partial(checkpoint, block.forward, use_reentrant=False, context_fn=partial(_same_hooks, block))
        # object.__setattr__: a bridge component passes attribute writes on to the HF module it wraps.
        object.__setattr__(block, "forward", forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # back to the class's forward


def _same_hooks(block: torch.nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """Checkpoint contexts (forward, recomputation) that put the forward's hooks of ``block``'s modules
    back in place for the recomputation."""
    modules = list(block.modules())
    saved = [(dict(m._forward_hooks), dict(m._forward_hooks_with_kwargs)) for m in modules]

    @contextmanager
    def recomputation() -> Iterator[None]:
        current = [(m._forward_hooks, m._forward_hooks_with_kwargs) for m in modules]
        for module, (hooks, with_kwargs) in zip(modules, saved):
            module._forward_hooks, module._forward_hooks_with_kwargs = OrderedDict(hooks), with_kwargs
        try:
            yield
        finally:
            for module, (hooks, with_kwargs) in zip(modules, current):
                module._forward_hooks, module._forward_hooks_with_kwargs = hooks, with_kwargs

    return nullcontext(), recomputation()
