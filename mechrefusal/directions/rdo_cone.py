"""RDO's k-dimensional concept cones (Wollschläger et al. 2025, §5): a refusal subspace instead of one
direction.

An orthonormal basis ``B`` (k x d_model, from the QR decomposition of a free parameter, projected off the
forbidden directions) is learned with RDO's loss (`rdo_loss`: ablation, addition, retain) applied to
directions sampled inside the cone, ``r = normalise(w B)`` with ``w`` drawn uniformly from ``[0, 1)^k``
each micro-batch, so every direction of the cone, not one, must mediate refusal. The first basis vector
starts at the DIM anchor, the others at seeded random vectors; the addition uses the anchor's layer and
norm, as single-direction RDO does. A finder returns one direction, so the cone is a function of its own
rather than an entry of ``FINDERS``; RDO's patience, learning-rate cuts and independence penalty do not
apply (the sampled loss is noisy, so the last iterate is returned).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.directions.dim import massive_dims
from mechrefusal.directions.rdo import Problem, RDOSettings, forbidden_basis, frozen, rdo_loss, settings_targets
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast


def rdo_cone(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    dim: Direction,
    k: int,
    *,
    settings: RDOSettings = RDOSettings(),
    orthogonal_to: Direction | DirectionSet | None = None,
    context: Interventions = None,
    exclude_massive: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> DirectionSet:
    """Learn a ``k``-dimensional refusal cone from the DIM anchor ``dim`` (targets from the first
    ``settings.n_prompts`` of ``harmful`` and ``harmless``): its orthonormal basis, each vector scaled to
    the anchor's norm, at the anchor's layer and position, method ``"rdo-cone"``. ``orthogonal_to`` keeps
    the cone in the complement of those directions; ``context`` is active during generation and search."""
    if k < 1:
        raise SettingError(f"A cone needs a dimension of at least 1, got {k}.")
    if k > model.d_model:
        raise SettingError(f"A cone of dimension {k} does not fit in this model's width d_model={model.d_model}.")
    DirectionSet([dim]).check_width(model.d_model, "the DIM direction's model")
    if orthogonal_to is not None:
        as_direction_set(orthogonal_to).check_width(model.d_model)
    started = time.perf_counter()
    with model.intervene(context):
        massive = massive_dims(model) if exclude_massive else []
    forbidden = forbidden_basis(model.d_model, orthogonal_to, massive)
    free = model.d_model - (0 if forbidden is None else forbidden.shape[1])
    if k > free:
        raise SettingError(
            f"A cone of dimension {k} does not fit in the {free} dimensions left once the directions it must "
            "stay orthogonal to are removed."
        )
    targets = settings_targets(
        model, harmful, harmless, dim, settings, context=context, batch_size=batch_size, progress=progress
    )
    generated = time.perf_counter()
    problem = Problem(targets, dim.vector.norm().item(), dim.layer, dim.position, settings, None, context)
    basis, history = optimise_cone(model, problem, dim.vector, k, forbidden=forbidden, progress=progress)
    provenance = {
        "rdo_cone": {
            "k": k,
            "settings": asdict(settings),
            "history": history,
            "massive_dims_excluded": massive,
            "targets_key": targets.key,
            "targets_s": round(generated - started, 2),
            "search_s": round(time.perf_counter() - generated, 2),
            "n_orthogonal_to": 0 if orthogonal_to is None else len(as_direction_set(orthogonal_to)),
        },
        "dim": {"layer": dim.layer, "position": dim.position, "norm": problem.alpha},
    }
    return DirectionSet(
        [
            Direction(problem.alpha * vector.cpu(), dim.layer, dim.position, "rdo-cone", {**provenance, "index": i})
            for i, vector in enumerate(basis)
        ]
    )


def optimise_cone(
    model: Model,
    problem: Problem,
    anchor: Float[Tensor, " d_model"],
    k: int,
    *,
    forbidden: Float[Tensor, "d_model c"] | None = None,
    progress: bool = True,
) -> tuple[Float[Tensor, "k d_model"], list[dict]]:
    """AdamW on the cone's free parameter, RDO's loss at a sampled cone direction per micro-batch; returns
    the last iterate's orthonormal basis and the per-step loss history."""
    settings = problem.settings
    generator = torch.Generator().manual_seed(settings.seed)
    forbidden = None if forbidden is None else forbidden.to(model.device)
    start = torch.cat([anchor.detach().float()[None], torch.randn(k - 1, len(anchor), generator=generator)])
    free = torch.nn.Parameter(start.to(model.device))
    optimizer = torch.optim.AdamW([free], lr=settings.lr, weight_decay=settings.weight_decay)
    n = min(len(problem.targets.harmful), len(problem.targets.harmless))
    per_step = min(settings.batch_size, n)
    steps_per_epoch = n // per_step
    history: list[dict] = []
    with frozen(model), autocast(model, settings.dtype):
        for step in tqdm(range(settings.steps), desc="RDO cone", disable=not progress, leave=False):
            if step % steps_per_epoch == 0:
                order = torch.randperm(n, generator=generator).tolist()
            first_index = step % steps_per_epoch * per_step
            indices = order[first_index : first_index + per_step]
            optimizer.zero_grad(set_to_none=True)
            record: dict = {"step": step}
            for first in range(0, per_step, settings.micro_batch_size):
                micro = indices[first : first + settings.micro_batch_size]
                weights = torch.rand(k, generator=generator).to(model.device)
                r = weights @ orthonormal(free, forbidden)
                parts = rdo_loss(model, r / r.norm(), problem, micro)
                (parts["total"] * len(micro) / per_step).backward()
                for name, value in parts.items():
                    record[name] = record.get(name, 0.0) + value.item() * len(micro) / per_step
            history.append(record)
            optimizer.step()
        with torch.no_grad():
            basis = orthonormal(free, forbidden)
    return basis, history


def orthonormal(
    free: Float[Tensor, "k d_model"], forbidden: Float[Tensor, "d_model c"] | None
) -> Float[Tensor, "k d_model"]:
    """Orthonormal rows spanning ``free`` projected off ``forbidden`` (float32 QR, differentiable), each
    signed to keep a positive component along its own row."""
    with torch.autocast(free.device.type, enabled=False):
        rows = free.float() if forbidden is None else free.float() - (free.float() @ forbidden) @ forbidden.T
        q, r = torch.linalg.qr(rows.T)
        return (q * torch.sign(r.diagonal())).T
