"""Generalisation of refusal to public harmful sets the model was not trained on (adaptive-attack issue,
item 5): judged refusal on held-out samples of AdvBench and HarmBench beside the team's own harmful test
split, plain and with each saved direction (and all of them) ablated.

A public prompt is held out when its normalised text (`mechrefusal.data.splits.normalise`) is in none of
the prompts the trainer sees: the train and val splits of the bundled sets (the trainer fine-tunes on the
train splits and selects directions and checkpoints on the val splits). Each set is then sampled to ``n``
prompts with ``random.Random(seed)``, so a rerun judges the same prompts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mechrefusal import data
from mechrefusal.core.checkpoint_record import public_training_set
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import DataError, SettingError
from mechrefusal.core.precision import resolve
from mechrefusal.data.splits import normalise
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.measure.evaluation import judged_completions
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE
from mechrefusal.measure.judges import Judge, refusal_judge
from mechrefusal.models import Model

TEAM_SET = "harmful"
"""The team's own harmful set; its test split is the comparison column."""
SEEN_SPLITS = ("train", "val")
"""Splits of the bundled sets the trainer sees; a public prompt in one of them is not held out."""


@dataclass(frozen=True)
class HeldOutSample:
    """A deterministic sample of one harmful set's prompts that the trainer never saw."""

    name: str
    prompts: list[str]
    held_out: int
    """Prompts of the set left after dropping those the trainer saw (before sampling)."""
    dropped: int
    """Prompts dropped because their normalised text is in a bundled train or val split."""

    @property
    def n(self) -> int:
        return len(self.prompts)

    def to_dict(self) -> dict:
        return {"n": self.n, "held_out": self.held_out, "dropped": self.dropped}


def seen_prompts(splits: Sequence[str] = SEEN_SPLITS) -> set[str]:
    """The normalised text of every bundled prompt in ``splits`` (default: those the trainer sees, the train
    and val splits)."""
    return {normalise(prompt) for name in data.BUNDLED_SETS for split in splits for prompt in data.load(name, split)}


def held_out_sample(
    name: str, *, n: int, seed: int, seen: set[str] | None = None, prompts: Sequence[str] | None = None
) -> HeldOutSample:
    """Up to ``n`` prompts of the public set ``name`` (or of the team's harmful test split for
    ``"harmful"``) that are not in ``seen`` (default: `seen_prompts`), drawn with ``random.Random(seed)``.
    ``prompts`` replaces the set's own prompts (tests)."""
    if name not in (*data.PUBLIC_SETS, TEAM_SET):
        raise SettingError(
            f"Unknown harmful set {name!r} for the generalisation measurement; choose from "
            f"{', '.join((*data.PUBLIC_SETS, TEAM_SET))}."
        )
    if n < 1:
        raise SettingError(f"n (prompts judged per set) must be at least 1, got {n}.")
    if prompts is None:
        prompts = data.load(name, "test" if name == TEAM_SET else None)
    seen = seen_prompts() if seen is None else seen
    kept = [prompt for prompt in prompts if normalise(prompt) not in seen]
    if not kept:
        raise DataError(
            f"Every one of the {len(prompts)} prompts of {name} is in the training prompts: none is held out."
        )
    sample = random.Random(seed).sample(kept, min(n, len(kept)))
    return HeldOutSample(name, sample, held_out=len(kept), dropped=len(prompts) - len(kept))


@dataclass(repr=False)
class Generalisation:
    """Judged refusal per condition (plain, each saved direction ablated, all ablated) and per set."""

    rates: dict[str, dict[str, float]]
    """``rates[condition][set]``: the fraction of the set's sample judged a refusal."""
    samples: dict[str, HeldOutSample]
    judge: str
    seed: int
    max_new_tokens: int
    precision: dict
    """The compute dtype generation ran in and why (`mechrefusal.core.precision.resolve`)."""

    def __repr__(self) -> str:
        plain = ", ".join(f"{name} {rate:.0%}" for name, rate in self.rates["plain"].items())
        return f"Generalisation(plain: {plain}; {len(self.rates)} conditions, judge={self.judge})"

    def markdown(self, checkpoint: str) -> list[str]:
        """One markdown table row per condition: the checkpoint, the condition and the rate per set."""
        return [
            f"| {checkpoint} | {condition} | " + " | ".join(f"{rates[name]:.0%}" for name in self.samples) + " |"
            for condition, rates in self.rates.items()
        ]

    def to_dict(self) -> dict:
        return {
            "rates": self.rates,
            "sets": {name: sample.to_dict() for name, sample in self.samples.items()},
            "judge": self.judge,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "precision": self.precision,
        }


def conditions(
    directions: DirectionSet | None, extra: Mapping[str, Direction] | None = None
) -> dict[str, Interventions]:
    """``plain``, ``dI ablated`` for each saved direction, ``all saved ablated`` when there are several, and
    ``NAME ablated`` for each of the ``extra`` directions (e.g. a fresh one)."""
    found = directions or DirectionSet()
    named: dict[str, Interventions] = {"plain": None}
    named.update({f"d{i} ablated": Ablate(direction) for i, direction in enumerate(found)})
    if len(found) > 1:
        named["all saved ablated"] = Ablate(found)
    named.update({f"{name} ablated": Ablate(direction) for name, direction in (extra or {}).items()})
    return named


def public_refusal(
    model: Model,
    *,
    sets: Sequence[str] = (*data.PUBLIC_SETS, TEAM_SET),
    n: int = 100,
    seed: int = 0,
    judge: str | Judge = "substring",
    ablations: bool = True,
    extra: Mapping[str, Direction] | None = None,
    max_new_tokens: int = 32,
    dtype: str = "auto",
    batch_size: int = GENERATION_BATCH_SIZE,
    progress: bool = False,
) -> Generalisation:
    """Judged refusal of ``model`` on held-out samples of ``sets``, plain and (``ablations``) under each of
    its saved directions ablated and all of them, and with each of the ``extra`` directions ablated (a fresh
    one, say); a model without saved directions gets the plain row. A set the model (a trainer checkpoint) was
    trained on is refused: its prompts are not held out."""
    if not sets:
        raise SettingError("sets is empty; name at least one of " + ", ".join((*data.PUBLIC_SETS, TEAM_SET)) + ".")
    if (trained_on := public_training_set(model.spec)) in sets:
        others = ",".join(name for name in sets if name != trained_on) or TEAM_SET
        raise SettingError(f"{model.spec} was trained on {trained_on}; score only sets it never saw (sets={others}).")
    seen = seen_prompts()
    samples = {name: held_out_sample(name, n=n, seed=seed, seen=seen) for name in sets}
    judge_name, judge_instance = (
        (judge, refusal_judge(judge)()) if isinstance(judge, str) else (type(judge).__name__, judge)
    )
    named = conditions(model.directions if ablations else None, extra)
    rates = {
        condition: {
            name: judged_completions(
                model,
                sample.prompts,
                intervention=intervention,
                judge=judge_instance,
                max_new_tokens=max_new_tokens,
                dtype=dtype,
                batch_size=batch_size,
                progress=progress,
            ).rate
            for name, sample in samples.items()
        }
        for condition, intervention in named.items()
    }
    return Generalisation(rates, samples, judge_name, seed, max_new_tokens, resolve(dtype, model.device).to_dict())
