"""Judged refusal: generate completions (bf16 autocast where it is fast, `mechrefusal.core.precision`) and
let a judge label them.

`judged_completions` is the one place that generates and judges for the analysis job and the
independence measurements; `refusal_rates` is the checkpoint table of ``analyses/trainer_table.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mechrefusal import data
from mechrefusal.core.directions import DirectionSet
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE, generate
from mechrefusal.measure.judges import Judge, SubstringJudge, Verdict, check_refusal_judge
from mechrefusal.measure.metrics import first_token_kl
from mechrefusal.models import Model, check_instructions
from mechrefusal.models.autocast import autocast


@dataclass(repr=False)
class JudgedCompletions:
    """Greedy completions of some prompts and the judge's verdicts on them."""

    prompts: list[str]
    completions: list[str]
    verdicts: list[Verdict]

    @property
    def rate(self) -> float:
        """Fraction of completions judged a refusal."""
        return sum(verdict.refused for verdict in self.verdicts) / len(self.verdicts)

    @property
    def empty(self) -> int:
        """How many completions are empty (the first token ended the reply): neither a refusal nor an answer."""
        return sum(not completion.strip() for completion in self.completions)

    def __repr__(self) -> str:
        rate = f"{self.rate:.3g}" if self.verdicts else "n/a"
        return f"JudgedCompletions(n={len(self.verdicts)}, refusal_rate={rate}, empty={self.empty})"

    def examples(self, n: int = 3) -> list[dict]:
        """The first ``n`` (prompt, completion, refused) triples, for reports."""
        return [
            {"prompt": p, "completion": c, "refused": v.refused}
            for p, c, v in list(zip(self.prompts, self.completions, self.verdicts))[:n]
        ]


def judged_completions(
    model: Model,
    prompts: Sequence[str],
    *,
    intervention: Interventions = None,
    judge: Judge | None = None,
    max_new_tokens: int = 32,
    dtype: str = "auto",
    batch_size: int = GENERATION_BATCH_SIZE,
    progress: bool = False,
) -> JudgedCompletions:
    """Generate greedy completions under ``intervention`` in ``dtype`` and judge them (``judge`` decides
    refusal; default: the substring judge)."""
    judge = judge or SubstringJudge()
    check_refusal_judge(judge)
    check_instructions(prompts, "prompts")
    with autocast(model, dtype):
        completions = generate(
            model,
            prompts,
            max_new_tokens=max_new_tokens,
            intervention=intervention,
            batch_size=batch_size,
            progress=progress,
        )
    return JudgedCompletions(list(prompts), completions, judge.judge(prompts, completions))


def refusal_rate(
    model: Model,
    instructions: Sequence[str],
    *,
    judge: Judge | None = None,
    intervention: Interventions = None,
    max_new_tokens: int = 32,
    dtype: str = "float32",
    batch_size: int = GENERATION_BATCH_SIZE,
    progress: bool = False,
) -> float:
    """Fraction of instructions whose greedy completion the judge calls a refusal."""
    return judged_completions(
        model,
        instructions,
        intervention=intervention,
        judge=judge,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        batch_size=batch_size,
        progress=progress,
    ).rate


def refusal_rates(
    model: Model,
    directions: DirectionSet | None = None,
    *,
    n: int = 64,
    max_new_tokens: int = 32,
    dtype: str = "auto",
    judge: Judge | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Refusal rates on ``n`` test prompts per set: harmful (plain, each direction ablated alone, all
    ablated), harmless and over-refusal (plain), and the first-token KL on harmless prompts with all
    directions ablated."""
    harmful, harmless, overrefusal = (data.load(name, "test")[:n] for name in ("harmful", "harmless", "overrefusal"))

    def rate(prompts, intervention=None):
        return refusal_rate(
            model,
            prompts,
            intervention=intervention,
            judge=judge,
            max_new_tokens=max_new_tokens,
            dtype=dtype,
            progress=progress,
        )

    rates = {"harmful": rate(harmful), "harmless": rate(harmless), "overrefusal": rate(overrefusal)}
    for i, direction in enumerate(directions or []):
        rates[f"harmful, d{i} ablated"] = rate(harmful, Ablate(direction))
    if directions is not None and len(directions) > 1:
        rates["harmful, all ablated"] = rate(harmful, Ablate(directions))
    if directions is not None and len(directions):
        rates["kl_harmless_all_ablated"] = first_token_kl(model, harmless, Ablate(directions)).mean().item()
    return rates
