"""Refusal Direction Optimisation (RDO; Wollschläger et al. 2025, docs/method.md §2.7).

A unit vector ``r`` is learned by gradient descent through the frozen model, starting from the DIM
direction, which also fixes the layer of the activation addition and its size ``alpha = ||r_DIM||``:

- ablation loss: cross-entropy of harmful prompts' compliant targets with ``r`` ablated everywhere;
- addition loss: cross-entropy of harmless prompts' refusal targets with ``alpha * r`` added;
- retain loss: KL(base || ablated) on harmless prompts followed by their own completions;
- optionally, the representational-independence penalty against given directions: the shift of the
  per-layer last-token cosine with each of them when ``r`` is ablated, and of the cosine with ``r``
  when each of them is ablated (harmful prompts, layers below 90% depth).

AdamW on ``r`` (fp32), the gradient projected onto the sphere's tangent (and onto the allowed
subspace), ``r`` renormalised after every step; the lowest-loss iterate is returned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.cli import choice
from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import DTYPES, check_dtype
from mechrefusal.directions.dim import massive_dims
from mechrefusal.directions.rdo_targets import RDOTargets, rdo_targets
from mechrefusal.directions.repind import default_layers, last_token_cosines
from mechrefusal.interventions import Ablate, Add, Interventions
from mechrefusal.models import Batch, Model, ReplyBatch
from mechrefusal.models.autocast import autocast

PENALTIES = ("absolute", "squared")


@dataclass
class RDOSettings:
    """Settings of one RDO search; the defaults finish on the embedded model on 2 CPU cores in minutes."""

    ablation_weight: float = 1.0
    """Weight of the ablation loss (harmful prompts' compliant targets, direction ablated)."""
    addition_weight: float = 0.2
    """Weight of the addition loss (harmless prompts' refusal targets, direction added at the DIM layer)."""
    retain_weight: float = 1.0
    """Weight of the retain loss (KL from the base model on harmless prompts and their own completions)."""
    independence_weight: float = 1.0
    """Weight of the representational-independence penalty (used only with `independent_of`)."""
    independence_penalty: str = choice("absolute", PENALTIES)
    """How a cosine shift is penalised: absolute or squared."""
    n_prompts: int = 16
    """Prompts per set (harmful; harmless) given targets and trained on."""
    compliant_tokens: int = 30
    """Tokens of the compliant targets (greedy, DIM ablated)."""
    refusal_tokens: int = 24
    """Tokens generated with DIM added, cut to their first sentence as refusal targets."""
    answer_tokens: int = 30
    """Tokens of the harmless prompts' own completions (retain loss)."""
    lr: float = 1e-2
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay (on a renormalised vector it only rescales the step)."""
    batch_size: int = 16
    """Effective batch: (harmful, harmless) example pairs per optimiser step (equal to n_prompts, every step
    sees all targets and the losses of the iterates compare exactly)."""
    micro_batch_size: int = 8
    """Example pairs per forward pass (gradient accumulation up to `batch_size`)."""
    steps: int = 24
    """Optimiser steps, cycling over the examples in a seeded order (targets cost more than a step, so
    the few there are are reused)."""
    patience: int = 4
    """Steps without a new lowest loss before the learning rate is cut."""
    lr_cut: float = 0.5
    """Factor the learning rate is multiplied by at each cut."""
    max_cuts: int = 2
    """Learning-rate cuts before the search stops early."""
    dtype: str = choice("auto", DTYPES)
    """Compute dtype of the model's forward passes (auto, bfloat16 autocast or float32; see
    `mechrefusal.core.precision`); r stays fp32."""
    seed: int = 0
    """Seed of the example order."""

    def __post_init__(self) -> None:
        weights = (self.ablation_weight, self.addition_weight, self.retain_weight, self.independence_weight)
        if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights[:3]):
            raise SettingError(
                f"RDO loss weights must be finite and non-negative, with one of ablation/addition/"
                f"retain positive; got {weights}."
            )
        if self.independence_penalty not in PENALTIES:
            raise SettingError(
                f"Unknown independence penalty {self.independence_penalty!r}; choose one of {', '.join(PENALTIES)}."
            )
        if min(self.n_prompts, self.batch_size, self.micro_batch_size, self.steps) < 1 or self.lr <= 0:
            raise SettingError("RDO needs positive n_prompts, batch_size, micro_batch_size, steps and lr.")
        if not 0 < self.lr_cut < 1:
            raise SettingError(f"lr_cut must lie between 0 and 1, got {self.lr_cut}.")
        check_dtype(self.dtype)


@dataclass
class Problem:
    """What stays fixed while ``r`` moves: targets, the DIM anchor and the penalty's directions."""

    targets: RDOTargets
    alpha: float
    layer: int
    position: int
    settings: RDOSettings
    independent: Float[Tensor, "k d_model"] | None = None
    context: Interventions = None


def rdo(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    dim: Direction,
    *,
    settings: RDOSettings = RDOSettings(),
    orthogonal_to: Direction | DirectionSet | None = None,
    independent_of: Direction | DirectionSet | None = None,
    context: Interventions = None,
    exclude_massive: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> Direction:
    """Learn a refusal direction from the DIM anchor ``dim`` (targets from the first ``settings.n_prompts``
    of ``harmful`` and ``harmless``).

    Returns ``Direction(alpha * r, dim.layer, dim.position, "rdo")`` whose provenance holds the settings,
    the loss history and the step of the returned (lowest-loss) iterate.
    ``orthogonal_to`` restricts ``r`` to the orthogonal complement of those directions; ``independent_of``
    adds the independence penalty against them; ``context`` is active during generation and search.
    """
    DirectionSet([dim]).check_width(model.d_model, "the DIM direction's model")
    for given in (orthogonal_to, independent_of):
        if given is not None:
            as_direction_set(given).check_width(model.d_model)
    started = time.perf_counter()
    with model.intervene(context):
        massive = massive_dims(model) if exclude_massive else []
    targets = settings_targets(
        model, harmful, harmless, dim, settings, context=context, batch_size=batch_size, progress=progress
    )
    generated = time.perf_counter()
    independent = None
    if independent_of is not None:
        matrix = as_direction_set(independent_of).matrix.float()
        independent = (matrix / matrix.norm(dim=-1, keepdim=True)).to(model.device)
    problem = Problem(targets, dim.vector.norm().item(), dim.layer, dim.position, settings, independent, context)
    forbidden = forbidden_basis(model.d_model, orthogonal_to, massive)
    unit, history, best_step = optimise(model, problem, dim.vector, forbidden=forbidden, progress=progress)
    provenance = {
        "rdo": {
            "settings": asdict(settings),
            "history": history,
            "best_step": best_step,
            "best_loss": history[best_step]["total"],
            "n_harmful_targets": len(targets.harmful),
            "n_harmless_targets": len(targets.harmless),
            "targets_key": targets.key,
            "massive_dims_excluded": massive,
            "targets_s": round(generated - started, 2),
            "search_s": round(time.perf_counter() - generated, 2),
            "n_orthogonal_to": 0 if orthogonal_to is None else len(as_direction_set(orthogonal_to)),
            "n_independent_of": 0 if independent_of is None else len(as_direction_set(independent_of)),
        },
        "dim": {
            "layer": dim.layer,
            "position": dim.position,
            "norm": problem.alpha,
            **{k: dim.provenance[k] for k in ("bypass", "induce", "kl", "passed_filters") if k in dim.provenance},
        },
    }
    return Direction(problem.alpha * unit.cpu(), dim.layer, dim.position, "rdo", provenance)


def settings_targets(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    dim: Direction,
    settings: RDOSettings,
    *,
    context: Interventions = None,
    batch_size: int = 16,
    progress: bool = False,
) -> RDOTargets:
    """`rdo_targets` on the first ``settings.n_prompts`` prompts of each set, with the settings' token budgets."""
    return rdo_targets(
        model,
        list(harmful)[: settings.n_prompts],
        list(harmless)[: settings.n_prompts],
        dim,
        context=context,
        compliant_tokens=settings.compliant_tokens,
        refusal_tokens=settings.refusal_tokens,
        answer_tokens=settings.answer_tokens,
        dtype=settings.dtype,
        batch_size=batch_size,
        progress=progress,
    )


def optimise(
    model: Model,
    problem: Problem,
    init: Float[Tensor, " d_model"],
    *,
    forbidden: Float[Tensor, "d_model c"] | None = None,
    progress: bool = True,
) -> tuple[Float[Tensor, " d_model"], list[dict], int]:
    """Projected AdamW on the unit sphere (within the complement of ``forbidden``), from ``init``.

    Returns the lowest-loss iterate, the per-step loss history and that iterate's step. A step's loss
    is that of its batch at the iterate before the update.
    """
    settings = problem.settings
    forbidden = None if forbidden is None else forbidden.to(model.device)
    start = project_out(init.detach().float().to(model.device), forbidden)
    if start.norm() < 1e-6 * init.norm():
        raise SettingError(
            "The DIM direction lies in the span of the directions RDO must stay orthogonal to; "
            "there is nothing left to start from."
        )
    r = torch.nn.Parameter(start / start.norm())
    optimizer = torch.optim.AdamW([r], lr=settings.lr, weight_decay=settings.weight_decay)
    n = min(len(problem.targets.harmful), len(problem.targets.harmless))
    per_step = min(settings.batch_size, n)
    steps_per_epoch = n // per_step
    generator = torch.Generator().manual_seed(settings.seed)
    history: list[dict] = []
    best_loss, best_r, best_step, stale, cuts = math.inf, r.detach().clone(), 0, 0, 0
    with frozen(model), autocast(model, settings.dtype):
        for step in tqdm(range(settings.steps), desc="RDO", disable=not progress, leave=False):
            if step % steps_per_epoch == 0:
                order = torch.randperm(n, generator=generator).tolist()
            first_index = step % steps_per_epoch * per_step
            indices = order[first_index : first_index + per_step]
            optimizer.zero_grad(set_to_none=True)
            record = {"step": step, "lr": optimizer.param_groups[0]["lr"]}
            for first in range(0, per_step, settings.micro_batch_size):
                micro = indices[first : first + settings.micro_batch_size]
                parts = rdo_loss(model, r, problem, micro)
                (parts["total"] * len(micro) / per_step).backward()
                for name, value in parts.items():
                    record[name] = record.get(name, 0.0) + value.item() * len(micro) / per_step
            history.append(record)
            if record["total"] < best_loss:
                best_loss, best_r, best_step, stale = record["total"], r.detach().clone(), step, 0
            else:
                stale += 1
            if stale >= settings.patience:
                if cuts == settings.max_cuts:
                    break
                cuts, stale = cuts + 1, 0
                for group in optimizer.param_groups:
                    group["lr"] *= settings.lr_cut
            with torch.no_grad(), torch.autocast(model.device.type, enabled=False):  # fp32 projections
                assert r.grad is not None  # backward ran on this step
                gradient = project_out(r.grad, forbidden)
                r.grad.copy_(gradient - (gradient @ r) * r)
                optimizer.step()
                moved = project_out(r, forbidden)
                r.copy_(moved / moved.norm())
    return best_r, history, best_step


def rdo_loss(model: Model, r: Float[Tensor, " d_model"], problem: Problem, indices: Sequence[int]) -> dict[str, Tensor]:
    """The weighted RDO loss of the example pairs ``indices`` at the unit vector ``r``, with its parts
    (each a mean over the examples); differentiable in ``r``. The three losses are computed under the
    problem's context interventions, the independence penalty without them (under them the given
    directions may be ablated already, and every shift would be zero)."""
    targets, settings = problem.targets, problem.settings
    harmful = [targets.harmful[i] for i in indices]
    harmless = [targets.harmless[i] for i in indices]
    direction = Direction(r, problem.layer, problem.position, "rdo")
    n = len(indices)
    with model.intervene(problem.context):
        # Harmful prompts with compliant targets and harmless ones with their answers share one ablated pass.
        ablated = model.tokenize_replies(
            harmful + harmless, [targets.compliant[i] for i in indices] + [targets.answers[i] for i in indices]
        )
        with model.intervene(Ablate(direction)):
            logits = model.bridge(ablated.input_ids, attention_mask=ablated.attention_mask)
        logprobs, rows, tokens = reply_logprobs(logits, ablated)
        token_ce = -logprobs.gather(1, tokens[:, None]).squeeze(1)
        ablation = per_example(token_ce, rows, 2 * n)[:n]
        answered = ReplyBatch(ablated.input_ids[n:], ablated.attention_mask[n:], ablated.reply_mask[n:])
        with torch.no_grad():
            base_logits = model.bridge(answered.input_ids, attention_mask=answered.attention_mask)
        base, _, _ = reply_logprobs(base_logits, answered)
        retain_tokens = rows >= n  # row-major order: the same tokens, in the same order, as in `base`
        token_kl = (base.exp() * (base - logprobs[retain_tokens])).sum(dim=-1)
        retain = per_example(token_kl, rows[retain_tokens] - n, n)

        refusing = model.tokenize_replies(harmless, [targets.refusals[i] for i in indices])
        with model.intervene(Add(Direction(problem.alpha * r, problem.layer, problem.position, "rdo"))):
            logits = model.bridge(refusing.input_ids, attention_mask=refusing.attention_mask)
        logprobs, rows, tokens = reply_logprobs(logits, refusing)
        addition = per_example(-logprobs.gather(1, tokens[:, None]).squeeze(1), rows, n)

    parts = {"ablation": ablation.mean(), "addition": addition.mean(), "retain": retain.mean()}
    total = (
        settings.ablation_weight * parts["ablation"]
        + settings.addition_weight * parts["addition"]
        + settings.retain_weight * parts["retain"]
    )
    if problem.independent is not None:
        prompts = right_padded(model.tokenize(harmful))  # no fully masked attention rows: no NaN gradients in bf16
        parts["independence"] = independence_penalty(
            model, r, problem.independent, prompts, settings.independence_penalty
        ).mean()
        total = total + settings.independence_weight * parts["independence"]
    return {"total": total, **parts}


def independence_penalty(
    model: Model,
    r: Float[Tensor, " d_model"],
    others: Float[Tensor, "k d_model"],
    batch: Batch,
    penalty: str = "absolute",
) -> Float[Tensor, " batch"]:
    """Per prompt, the mean over layers below 90% depth and over ``others`` of the |shift| (or squared
    shift) of cos(x, other) when ``r`` is ablated and of cos(x, r) when each other is ablated."""
    layers = default_layers(model)
    base = last_token_cosines(model, batch, torch.cat([r[None], others]), layers)
    with model.intervene(Ablate(Direction(r, 0, -1, "rdo"))):
        shifts = [last_token_cosines(model, batch, others, layers) - base[..., 1:]]
    for other in others:
        with model.intervene(Ablate(Direction(other, 0, -1, "given"))):
            shifts.append(last_token_cosines(model, batch, r[None], layers) - base[..., :1])
    shift = torch.cat(shifts, dim=-1)
    return (shift.abs() if penalty == "absolute" else shift.square()).mean(dim=(1, 2))


def right_padded(batch: Batch) -> Batch:
    """The same prompts with the padding moved to the right (each row rolled by its padding)."""
    padding = (batch.attention_mask == 0).sum(dim=1, keepdim=True)
    index = (torch.arange(batch.input_ids.shape[1], device=padding.device) + padding) % batch.input_ids.shape[1]
    return Batch(batch.input_ids.gather(1, index), batch.attention_mask.gather(1, index))


def reply_logprobs(
    logits: Float[Tensor, "batch seq vocab"], batch: ReplyBatch
) -> tuple[Float[Tensor, "token vocab"], Int[Tensor, " token"], Int[Tensor, " token"]]:
    """Float32 log-probabilities at the positions predicting reply tokens (selected before the softmax),
    with each token's row in the batch and its target id."""
    predicted = batch.reply_mask[:, 1:]
    rows = predicted.nonzero()[:, 0]
    return logits[:, :-1][predicted].float().log_softmax(dim=-1), rows, batch.input_ids[:, 1:][predicted]


def per_example(values: Float[Tensor, " token"], rows: Int[Tensor, " token"], n: int) -> Float[Tensor, " n"]:
    """Mean of per-token values within each example (``rows`` says which example a token belongs to)."""
    totals = torch.zeros(n, device=values.device).index_add(0, rows, values)
    return totals / torch.bincount(rows, minlength=n).clamp_min(1)


@contextmanager
def frozen(model: Model) -> Iterator[None]:
    """Evaluation mode and no weight gradients inside the block (restored afterwards)."""
    parameters = list(model.bridge.parameters())
    flags = [parameter.requires_grad for parameter in parameters]
    training = model.hf_model.training
    model.hf_model.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad_(flag)
        model.hf_model.train(training)


def forbidden_basis(
    d_model: int, orthogonal_to: Direction | DirectionSet | None, massive: list[int]
) -> Float[Tensor, "d_model c"] | None:
    """An orthonormal basis of what ``r`` must stay orthogonal to: the given directions and the massive
    dimensions of the attention sink."""
    directions = list(as_direction_set(orthogonal_to)) if orthogonal_to is not None else []
    directions += [Direction(torch.eye(d_model)[dim], 0, -1, "massive") for dim in massive]
    return DirectionSet(directions).basis() if directions else None


def project_out(
    vector: Float[Tensor, " d_model"], forbidden: Float[Tensor, "d_model c"] | None
) -> Float[Tensor, " d_model"]:
    """``vector`` without its component in the span of ``forbidden``'s orthonormal columns."""
    return vector if forbidden is None else vector - forbidden @ (forbidden.T @ vector)
