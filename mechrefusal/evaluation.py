"""Judged refusal rates of a model on the held-out test splits, plain and with directions ablated."""

from __future__ import annotations

from mechrefusal import data
from mechrefusal.directions import DirectionSet
from mechrefusal.interventions import Ablate
from mechrefusal.judges import Judge, SubstringJudge, refusal_rate
from mechrefusal.metrics import first_token_kl
from mechrefusal.models import Model
from mechrefusal.precision import autocast


def refusal_rates(model: Model, directions: DirectionSet | None = None, *, n: int = 64, max_new_tokens: int = 32,
                  dtype: str = "bfloat16", judge: Judge | None = None, progress: bool = False) -> dict[str, float]:
    """Refusal rates on ``n`` test prompts per set: harmful (plain, each direction ablated alone, all
    ablated), harmless and over-refusal (plain), and the first-token KL on harmless prompts with all
    directions ablated."""
    harmful, harmless, overrefusal = (data.load(name, "test")[:n] for name in ("harmful", "harmless", "overrefusal"))
    judge = judge or SubstringJudge()

    def rate(prompts, intervention=None):
        with autocast(model, dtype):
            return refusal_rate(model, prompts, judge=judge, intervention=intervention,
                                max_new_tokens=max_new_tokens, progress=progress)

    rates = {"harmful": rate(harmful), "harmless": rate(harmless), "overrefusal": rate(overrefusal)}
    for i, direction in enumerate(directions or []):
        rates[f"harmful, d{i} ablated"] = rate(harmful, Ablate(direction))
    if directions is not None and len(directions) > 1:
        rates["harmful, all ablated"] = rate(harmful, Ablate(directions))
    if directions is not None and len(directions):
        rates["kl_harmless_all_ablated"] = first_token_kl(model, harmless, Ablate(directions)).mean().item()
    return rates
