"""Attribution estimates of candidate ablation scores: ``-rᵀ C r`` is the derivative of the ε-scaled
ablation, the Hutchinson KL estimate is its second-order term, and the search agrees with the screen."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

import mechrefusal
from mechrefusal import data
from mechrefusal.directions.attribution import SITES, kl_estimate, refusal_attribution, site_names
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.measure.metrics import kl_divergence, last_token_logprobs, refusal_score


@pytest.fixture(scope="module")
def unit(toy) -> torch.Tensor:
    """A DIM candidate of the toy model (layer 2, last position), normalised."""
    candidates, _ = dim_candidates(
        toy, data.load("harmful", "train")[:32], data.load("harmless", "train")[:32], progress=False
    )
    return candidates[2, -1] / candidates[2, -1].norm()


@contextmanager
def scaled_ablation(model, unit: torch.Tensor, eps: float, sites: str):
    """``h <- h - eps (h·r) r`` at the attribution sites (eps = 1 at the writes is `Ablate` itself)."""

    def hook(activation, hook):
        r = unit.to(activation.dtype)
        return activation - eps * (activation @ r)[..., None] * r

    with model.bridge.hooks(fwd_hooks=[(name, hook) for name in site_names(model, sites)]):
        yield


@pytest.mark.parametrize("sites", SITES)
def test_the_estimate_is_the_derivative_of_the_scaled_ablation(toy, unit, sites):
    harmful = data.load("harmful", "val")[:8]
    baseline, matrix = refusal_attribution(toy, harmful, sites=sites, batch_size=4)  # padded batches

    def score(eps: float) -> float:
        with scaled_ablation(toy, unit, eps, sites):
            return refusal_score(toy, harmful, batch_size=4).mean().item()

    eps = 1e-2
    derivative = (score(eps) - score(-eps)) / (2 * eps)
    assert baseline == pytest.approx(score(0.0), abs=1e-4)
    assert abs(derivative) > 0.1
    assert -(unit.double() @ matrix @ unit.double()).item() == pytest.approx(derivative, rel=0.02, abs=1e-3)


def test_writes_ablated_are_the_whole_ablation(toy, unit):
    """Why the writes are the sites to linearise: projecting them at eps = 1 is exactly `Ablate`."""
    harmful = data.load("harmful", "val")[:4]
    with scaled_ablation(toy, unit, 1.0, "writes"):
        writes = last_token_logprobs(toy, harmful)
    ablated = last_token_logprobs(
        toy, harmful, intervention=mechrefusal.Ablate(mechrefusal.Direction(unit, 0, -1, "unit"))
    )
    torch.testing.assert_close(writes, ablated, atol=1e-4, rtol=0)


def test_the_kl_estimate_is_the_second_order_term(toy, unit):
    harmless = data.load("harmless", "val")[:8]
    estimate = kl_estimate(toy, harmless, unit[None], probes=256, batch_size=8).item()
    eps = 0.05
    base = last_token_logprobs(toy, harmless)
    with scaled_ablation(toy, unit, eps, "writes"):
        ablated = last_token_logprobs(toy, harmless)
    assert estimate == pytest.approx(kl_divergence(base, ablated).mean().item() / eps**2, rel=0.15)


def test_unknown_searches_and_sites_are_clear_errors(toy):
    with pytest.raises(ValueError, match="Unknown candidate search 'grid'"):
        mechrefusal.find_direction(toy, ["Hi"], ["Hello"], search="grid")
    with pytest.raises(ValueError, match="Unknown attribution sites 'reads'"):
        site_names(toy, "reads")
