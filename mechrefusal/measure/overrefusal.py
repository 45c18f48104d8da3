"""Over-refusal the way the paper reports it: compliance (the share of greedy replies that do not open with
a refusal, XSTest's prefix rule, `PrefixJudge`) on safe-but-edgy prompts and on harmless ones."""

from __future__ import annotations

from collections.abc import Sequence

from mechrefusal.interventions import Interventions
from mechrefusal.measure.evaluation import judged_completions
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE
from mechrefusal.measure.judges import PrefixJudge
from mechrefusal.models import Model


def compliance(
    model: Model,
    prompts: Sequence[str],
    *,
    intervention: Interventions = None,
    max_new_tokens: int = 32,
    dtype: str = "auto",
    batch_size: int = GENERATION_BATCH_SIZE,
    progress: bool = False,
) -> float:
    """The share of ``prompts`` whose greedy reply under ``intervention`` the prefix judge does not call a
    refusal (1.0: no over-refusal)."""
    judged = judged_completions(
        model,
        prompts,
        intervention=intervention,
        judge=PrefixJudge(),
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        batch_size=batch_size,
        progress=progress,
    )
    return 1.0 - judged.rate
