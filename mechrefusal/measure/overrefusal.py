"""Over-refusal the way the paper reports it: compliance (the share of greedy replies that do not open with
a refusal, XSTest's prefix rule, `PrefixJudge`, and are not empty) on safe-but-edgy prompts and on harmless
ones."""

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
    """The share of ``prompts`` whose greedy reply under ``intervention`` is not empty and the prefix judge
    does not call a refusal (1.0: no over-refusal); an empty reply complies with nothing."""
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
    complied = [
        not verdict.refused and bool(reply.strip()) for reply, verdict in zip(judged.completions, judged.verdicts)
    ]
    return sum(complied) / len(complied)
