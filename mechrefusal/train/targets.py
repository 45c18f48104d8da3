"""Model-specific training data: what the model itself says, judged.

Harmless and over-refusal prompts get the model's own greedy answers, kept when the judge does not
call them refusals; harmful prompts get the model's own refusals, kept when the judge calls them
refusals. A model that does not refuse (the embedded default) gets replies from the team's refusal
set instead, drawn with a fixed seed. The harmful prompts' replies that are not refusals are kept as
well: they open recovery examples (`mechrefusal.train.recovery`). Results are cached under
``$MECHREFUSAL_HOME/targets`` by a key of the model's weights, its chat format, the prompts and the settings.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mechrefusal import data
from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.data.splits import normalise
from mechrefusal.measure.generalisation import seen_prompts
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE, generate
from mechrefusal.measure.judges import JUDGES, Verdict
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast
from mechrefusal.models.export import weights_digest

# Below this share of own refusals on harmful prompts the model is treated as one that does not refuse.
MIN_OWN_REFUSALS = 0.5


@dataclass
class Example:
    instruction: str
    reply: str
    prefill: str = ""
    """A start of the assistant turn before ``reply`` that is context, not trained (recovery examples)."""


@dataclass(repr=False)
class TrainingData:
    harmful: list[Example]
    harmless: list[Example]
    own_refusals: bool
    """Whether the refusal targets are the model's own (else the team's refusal replies)."""
    compliant: list[Example]
    """The model's own replies to harmful prompts that the judge does not call refusals (the openings of
    recovery examples, `mechrefusal.train.recovery`): of every harmful prompt with ``every_compliant``,
    else only of the prompts answered before the own-refusal check stopped."""

    def __repr__(self) -> str:
        return (
            f"TrainingData(harmful={len(self.harmful)}, harmless={len(self.harmless)}, "
            f"own_refusals={self.own_refusals}, compliant={len(self.compliant)})"
        )


def training_data(
    model: Model,
    split: str = "train",
    *,
    limit: int = 0,
    max_new_tokens: int = 32,
    dtype: str = "auto",
    seed: int = 0,
    judge: str = "substring",
    public: str = "",
    public_share: float = 0.0,
    public_seed: int | None = None,
    every_compliant: bool = False,
    progress: bool = True,
) -> TrainingData:
    """The model's own targets for one split of the bundled sets (cached); ``limit`` caps the prompts
    per side (harmful; harmless and over-refusal together), each part keeping its share (`leading_shares`), 0 for
    all; ``judge`` names the judge (`JUDGES`). ``public`` names a public harmful set whose prompts join the
    train split's harmful ones, after them and without those in any bundled split; ``public_share`` > 0
    keeps a sample of them, drawn with ``public_seed`` (default ``seed``), that makes up that share of the
    harmful prompts (`public_sample`). ``every_compliant`` answers every harmful prompt, so that each one the
    model complies with can open a recovery example; otherwise answering stops once the model is clearly not
    a refuser (`_own_refusals`) and only the prompts answered by then have compliant replies."""
    team_harmful = data.load("harmful", split)
    public_harmful = _public_prompts(public) if public and split == "train" else []
    public_harmful = public_sample(
        public_harmful, len(team_harmful), public_share, seed if public_seed is None else public_seed
    )
    harmful = leading_shares([team_harmful, public_harmful], limit)
    harmless = leading_shares([data.load("harmless", split), data.load("overrefusal", split)], limit)
    key = _cache_key(model, harmful + harmless, max_new_tokens, dtype, seed, judge, every_compliant)
    path = home() / "targets" / f"{key}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if "compliant" in stored:  # targets cached before they kept the compliant replies are made again
        return TrainingData(
            [Example(**e) for e in stored["harmful"]],
            [Example(**e) for e in stored["harmless"]],
            stored["own_refusals"],
            [Example(**e) for e in stored["compliant"]],
        )
    verdicts_of = JUDGES.get(judge)().judge
    with autocast(model, dtype):
        answers = generate(model, harmless, max_new_tokens=max_new_tokens, progress=progress)
        refusals, verdicts = _own_refusals(model, harmful, verdicts_of, max_new_tokens, every_compliant, progress)
    kept_harmless = [
        Example(p, a)
        for p, a, v in zip(harmless, answers, verdicts_of(harmless, answers))
        if not v.refused and a.strip()
    ]
    own = sum(v.refused for v in verdicts) >= MIN_OWN_REFUSALS * len(harmful)
    if own:
        kept_harmful = [Example(p, r) for p, r, v in zip(harmful, refusals, verdicts) if v.refused]
    else:
        replies = data.refusal_replies()
        rng = random.Random(seed)
        kept_harmful = [Example(p, rng.choice(replies)) for p in harmful]
    compliant = [Example(p, r) for p, r, v in zip(harmful, refusals, verdicts) if not v.refused and r.strip()]
    result = TrainingData(kept_harmful, kept_harmless, own, compliant)
    atomic_write_bytes(
        path,
        json.dumps(
            {
                "harmful": [_stored(e) for e in kept_harmful],
                "harmless": [_stored(e) for e in kept_harmless],
                "own_refusals": own,
                "compliant": [_stored(e) for e in compliant],
            }
        ).encode(),
    )
    return result


def leading_shares(parts: list[list[str]], limit: int) -> list[str]:
    """The leading prompts of each part, joined in order: all of them for ``limit`` 0, else ``limit`` in
    all, each part's count in proportion to its size (largest remainders), so a cap never drops a part
    that a plain ``[:limit]`` of the joined list would (the over-refusal prompts after 338 harmless ones)."""
    total = sum(len(part) for part in parts)
    if not limit or limit >= total:
        return [prompt for part in parts for prompt in part]
    exact = [limit * len(part) / total for part in parts]
    counts = [int(share) for share in exact]
    by_remainder = sorted(range(len(parts)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: limit - sum(counts)]:
        counts[i] += 1
    return [prompt for part, count in zip(parts, counts) for prompt in part[:count]]


def public_sample(prompts: list[str], team: int, share: float, seed: int) -> list[str]:
    """A sample of ``prompts``, drawn with ``seed`` and kept in their order, large enough to make up
    ``share`` of the harmful prompts beside ``team`` of the team's (rounded; all of them for ``share`` 0 or
    when there are too few)."""
    if not share:
        return prompts
    count = min(len(prompts), round(share * team / (1 - share)))
    kept = set(random.Random(seed).sample(range(len(prompts)), count))
    return [prompt for index, prompt in enumerate(prompts) if index in kept]


def with_edgy_share(harmless: list[Example], share: float) -> list[Example]:
    """``harmless`` with its over-refusal (safe-but-edgy) examples repeated a whole number of times so that
    they make up as close to ``share`` of the list as repeats can; unchanged when ``share`` is at or below
    their own share or the list has none of them or nothing else."""
    edgy_prompts = {normalise(prompt) for split in data.SPLITS for prompt in data.load("overrefusal", split)}
    edgy = [example for example in harmless if normalise(example.instruction) in edgy_prompts]
    other = [example for example in harmless if normalise(example.instruction) not in edgy_prompts]
    if not edgy or not other or share <= len(edgy) / len(harmless):
        return harmless
    repeats = max(1, round(share * len(other) / ((1 - share) * len(edgy))))
    return other + edgy * repeats


def _public_prompts(name: str) -> list[str]:
    """The public set's prompts that are in no bundled split (by normalised text), in its order."""
    bundled = seen_prompts(data.SPLITS)
    return [prompt for prompt in data.load(name) if normalise(prompt) not in bundled]


def _stored(example: Example) -> dict[str, str]:
    """An example as cached: without its (empty) prefill, so code older than recovery examples reads the
    file too."""
    return {"instruction": example.instruction, "reply": example.reply}


def _own_refusals(
    model: Model, harmful: list[str], verdicts_of: Callable, max_new_tokens: int, every: bool, progress: bool
) -> tuple[list[str], list[Verdict]]:
    """The model's replies to ``harmful`` and their verdicts, a generation batch at a time; unless ``every``,
    it stops early once the prompts left could not lift the refusals to ``MIN_OWN_REFUSALS`` (the replies are
    then used only as recovery openings: a model that does not refuse gets the team's refusals), which halves
    the work on such a model."""
    refusals: list[str] = []
    verdicts: list[Verdict] = []
    for start in range(0, len(harmful), GENERATION_BATCH_SIZE):
        chunk = harmful[start : start + GENERATION_BATCH_SIZE]
        replies = generate(model, chunk, max_new_tokens=max_new_tokens, progress=progress)
        refusals += replies
        verdicts += verdicts_of(chunk, replies)
        left = len(harmful) - len(refusals)
        if not every and sum(v.refused for v in verdicts) + left < MIN_OWN_REFUSALS * len(harmful):
            break
    return refusals, verdicts


def _cache_key(
    model: Model,
    prompts: list[str],
    max_new_tokens: int,
    dtype: str,
    seed: int,
    judge: str,
    every_compliant: bool = False,
) -> str:
    digest = weights_digest(model)
    digest.update(json.dumps([prompts, max_new_tokens, dtype, seed, torch.__version__, model.chat_format]).encode())
    if judge != "substring":  # the default judge keeps the keys of targets cached before judges were settings
        digest.update(judge.encode())
    if every_compliant:  # targets answered with the early stop keep their keys
        digest.update(b"every compliant")
    return digest.hexdigest()[:24]
