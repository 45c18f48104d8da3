"""First-order (attribution-patching) estimates of every candidate direction's ablation scores.

Projecting a unit direction ``r`` out of an activation ``h`` moves it by ``-(h·r) r``, so a metric M changes
by about ``-(g·r)(h·r)``, ``g = ∂M/∂h``. Summed over sites, positions and prompts that is ``-rᵀ C r`` with
``C = Σ g hᵀ``: one d_model × d_model matrix from one forward and one backward pass per batch, however
many candidates there are.

Sites: the writes into the residual stream (block 0's input, i.e. the embedding, and every attention and
MLP output). Once those are projected, the later block inputs `Ablate` also projects are already free of
``r``, so summing the clean activations there too (``sites="all"``: the derivative at ε = 0 of `Ablate`
scaled by ε) counts the residual stream again at every layer. Measured on SmolLM2-135M (untrained, a
round-0 checkpoint, the same with d0 ablated; `analyses/search_agreement.py`), rank correlation with
the screen's bypass scores: writes 0.86 / 0.80 / 0.76, all 0.79 / 0.69 / 0.61; median estimated KL ÷
screened KL: writes 0.4-0.6, all 18-25. Hence the writes.

KL(base || ablated) has no first-order term at the base model, so its estimate is the second-order
Fisher form ``½ δᵀ F δ`` of the first-token logit shift δ, ``F = diag(p) - p pᵀ``, from Hutchinson probes:
the gradient of ``Σ_y z_y √p_y log p_y``, ``z ~ N(0, I)``, gives ``u·δ`` with ``E[(u·δ)²] = δᵀ F δ``, and
``u·δ ≈ -rᵀ C_u r`` as above, per prompt (computed as projections on the candidates, cheaper than
per-prompt matrices). Each probe costs one backward pass. The second-order form underestimates large
shifts (about half the KL on SmolLM2, a third on the toy's biggest), which is why the search keeps
candidates within twice the KL filter; its rank correlation with the screened KL is 0.85-0.87.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechrefusal.core.errors import SettingError
from mechrefusal.directions.rdo import frozen
from mechrefusal.interventions import ablation_sites
from mechrefusal.measure.metrics import refusal_token_ids, score_from_logprobs
from mechrefusal.models import Model

SITES = ("writes", "all")


@dataclass
class _Site:
    """One hooked activation of the current batch (float32) and its latest gradient."""

    h: Float[Tensor, "batch seq d_model"]
    g: Float[Tensor, "batch seq d_model"] | None = None

    def receive(self, grad: Tensor) -> None:
        self.g = grad.detach().float()


def site_names(model: Model, sites: str = "writes") -> list[str]:
    """The hook points the estimates sum over (see the module docstring)."""
    if sites not in SITES:
        raise SettingError(f"Unknown attribution sites {sites!r}; choose one of {', '.join(SITES)}.")
    model_sites = ablation_sites(model)
    if sites == "all":
        return [site.format(layer=layer) for layer in range(model.n_layers) for site in model_sites]
    return ["blocks.0.hook_in"] + [
        site.format(layer=layer) for layer in range(model.n_layers) for site in model_sites[1:]
    ]


@contextmanager
def _recording(model: Model, names: list[str]) -> Iterator[list[_Site]]:
    """Record the activations at ``names`` during the forward passes inside the block, and their
    gradients in every later backward pass. The hooks run after those of active interventions."""
    records: list[_Site] = []

    def record(activation: Tensor, hook) -> Tensor:
        if not activation.requires_grad:  # the first site: the weights are frozen
            activation = activation.detach().requires_grad_()
        site = _Site(activation.detach().float())
        activation.register_hook(site.receive)
        records.append(site)
        return activation

    with model.bridge.hooks(fwd_hooks=[(name, record) for name in names]):
        yield records


def _stacked(
    records: list[_Site], mask: Int[Tensor, "batch seq"], which: str
) -> Float[Tensor, "batch site_seq d_model"]:
    """The activations (``which="h"``) or gradients (``"g"``) of every site side by side along the
    sequence, zero at padding positions (which the sums exclude)."""
    keep = mask[..., None].bool()
    return torch.cat([torch.where(keep, getattr(site, which), 0) for site in records], dim=1)


def _passes(
    model: Model,
    prompts: Sequence[str],
    names: list[str],
    batch_size: int,
    objectives: Callable[[Float[Tensor, "batch vocab"]], Iterator[Tensor]],
) -> Iterator[tuple[Float[Tensor, "batch vocab"], list[_Site], Int[Tensor, "batch seq"]]]:
    """One forward pass per batch (weights frozen; float32 log-probabilities of the first reply token),
    then one backward pass per objective ``objectives(logprobs)`` yields: after each, the recorded sites.

    Always in float32, autocast or not: under bf16 autocast the backward pass through left-padded
    batches gives NaN gradients (every estimate NaN on the toy model)."""
    with frozen(model), torch.autocast(model.device.type, enabled=False):
        for _, batch in model.batches(prompts, batch_size):
            with _recording(model, names) as records:
                logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
            logprobs = logits[:, -1].float().log_softmax(dim=-1)
            for objective in objectives(logprobs):
                objective.backward(retain_graph=True)
                yield logprobs.detach(), records, batch.attention_mask


def refusal_attribution(
    model: Model, harmful: Sequence[str], *, sites: str = "writes", batch_size: int = 16
) -> tuple[float, Float[Tensor, "d_model d_model"]]:
    """The mean refusal score M of ``harmful`` and C with ``M(r ablated) ≈ M - rᵀ C r`` for unit ``r``."""
    tokens = refusal_token_ids(model)
    total, matrix = 0.0, torch.zeros(model.d_model, model.d_model, dtype=torch.float64)

    def mean_score(logprobs: Tensor) -> Iterator[Tensor]:
        yield score_from_logprobs(logprobs, tokens).sum() / len(harmful)

    for logprobs, records, mask in _passes(model, harmful, site_names(model, sites), batch_size, mean_score):
        total += score_from_logprobs(logprobs, tokens).sum().item()
        matrix += torch.einsum("bsd,bse->de", _stacked(records, mask, "g"), _stacked(records, mask, "h")).double().cpu()
    return total / len(harmful), matrix


def kl_estimate(
    model: Model,
    harmless: Sequence[str],
    directions: Float[Tensor, "n d_model"],
    *,
    probes: int = 4,
    seed: int = 0,
    sites: str = "writes",
    batch_size: int = 16,
) -> Float[Tensor, " n"]:
    """Estimated mean first-token KL(base || ablated) on ``harmless`` of ablating each direction."""
    unit = _unit(directions).float().to(model.device)
    generator = torch.Generator().manual_seed(seed)
    squares = torch.zeros(len(unit), dtype=torch.float64)

    def probe_objectives(logprobs: Tensor) -> Iterator[Tensor]:
        root = logprobs.detach().mul(0.5).exp()
        for _ in range(probes):
            z = torch.randn(logprobs.shape, generator=generator).to(logprobs.device)
            yield (z * root * logprobs).sum()

    projected, done = torch.empty(0), None
    for _logprobs, records, mask in _passes(model, harmless, site_names(model, sites), batch_size, probe_objectives):
        if done is not records:  # a new batch: project its activations once, reuse them for every probe
            projected, done = _stacked(records, mask, "h") @ unit.T, records
        shift = (_stacked(records, mask, "g") @ unit.T * projected).sum(dim=1)  # -(u·δ) per prompt and direction
        squares += shift.double().square().sum(dim=0).cpu()
    return (0.5 * squares / (probes * len(harmless))).float()


def estimate_candidates(
    model: Model,
    directions: Float[Tensor, "n d_model"],
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    probes: int = 4,
    sites: str = "writes",
    batch_size: int = 16,
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Estimated bypass (mean refusal score of ``harmful``) and mean KL on ``harmless`` with each
    direction ablated: ``1 + probes`` backward passes per batch, whatever the number of directions."""
    baseline, matrix = refusal_attribution(model, harmful, sites=sites, batch_size=batch_size)
    unit = _unit(directions)
    bypass = baseline - torch.einsum("nd,de,ne->n", unit, matrix, unit)
    kl = kl_estimate(model, harmless, directions, probes=probes, sites=sites, batch_size=batch_size)
    return bypass.float(), kl


def _unit(directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    directions = directions.detach().double().cpu()
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
