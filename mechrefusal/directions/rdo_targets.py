"""The targets of Refusal Direction Optimisation, generated once per model with the DIM direction.

- harmful prompts get *compliant* targets: the greedy completion with the DIM direction ablated;
- harmless prompts get *refusal* targets: the first sentence of the completion with DIM added;
- harmless prompts also get their own completions (no intervention), on which RDO's retain loss
  keeps the ablated model close to the base model.

Everything is generated under the caller's context interventions and cached under
``$MECHREFUSAL_HOME/rdo-targets`` by a key of the model (spec, chat format, weights), the prompts, the
DIM direction, the context and the generation settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.core.provenance import weights_fingerprint
from mechrefusal.interventions import Ablate, Add, Interventions
from mechrefusal.measure.generation import generate
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(repr=False)
class RDOTargets:
    """Prompts and targets; empty generations are dropped, so the lists can be shorter than the prompts."""

    harmful: list[str]
    compliant: list[str]
    """The harmful prompts' completions with the DIM direction ablated."""
    harmless: list[str]
    refusals: list[str]
    """The first sentence of the harmless prompts' completions with the DIM direction added."""
    answers: list[str]
    """The harmless prompts' own completions."""
    key: str
    """The cache key ('' when the context cannot be keyed and nothing was cached)."""

    def __repr__(self) -> str:
        return (
            f"RDOTargets(harmful={len(self.harmful)}, compliant={len(self.compliant)}, harmless={len(self.harmless)}, "
            f"refusals={len(self.refusals)}, answers={len(self.answers)}, key={self.key[:12]!r})"
        )


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence end (all of it when there is none)."""
    end = _SENTENCE_END.search(text)
    return (text[: end.end()] if end else text).strip()


def rdo_targets(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    dim: Direction,
    *,
    context: Interventions = None,
    compliant_tokens: int = 30,
    refusal_tokens: int = 24,
    answer_tokens: int = 30,
    dtype: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> RDOTargets:
    """Generate (or read from the cache) the targets for ``harmful`` and ``harmless`` prompts."""
    if not harmful or not harmless:
        raise SettingError("RDO needs at least one harmful and one harmless prompt to build its targets.")
    settings = [compliant_tokens, refusal_tokens, answer_tokens, dtype]
    key = _key(model, harmful, harmless, dim, context, settings)
    path = home() / "rdo-targets" / f"{key}.json"
    if key and path.exists():
        return RDOTargets(**json.loads(path.read_text()))
    context = _flat(context)
    with autocast(model, dtype):
        compliant = generate(
            model,
            harmful,
            max_new_tokens=compliant_tokens,
            intervention=[*context, Ablate(dim)],
            batch_size=batch_size,
            progress=progress,
        )
        refusals = generate(
            model,
            harmless,
            max_new_tokens=refusal_tokens,
            intervention=[*context, Add(dim)],
            batch_size=batch_size,
            progress=progress,
        )
        answers = generate(
            model,
            harmless,
            max_new_tokens=answer_tokens,
            intervention=context,
            batch_size=batch_size,
            progress=progress,
        )
    kept_harmful = [(p, c.strip()) for p, c in zip(harmful, compliant) if c.strip()]
    kept_harmless = [
        (p, first_sentence(r), a.strip())
        for p, r, a in zip(harmless, refusals, answers)
        if first_sentence(r) and a.strip()
    ]
    if not kept_harmful or not kept_harmless:
        raise SettingError(
            "Every RDO target generation came back empty (the model ends its turn at once); "
            "RDO cannot learn from empty targets."
        )
    targets = RDOTargets(
        [p for p, _ in kept_harmful],
        [c for _, c in kept_harmful],
        [p for p, _, _ in kept_harmless],
        [r for _, r, _ in kept_harmless],
        [a for _, _, a in kept_harmless],
        key,
    )
    if key:
        atomic_write_bytes(path, json.dumps(asdict(targets)).encode())
    return targets


def _flat(context: Interventions) -> list:
    """The context's interventions as a list."""
    return list(context) if isinstance(context, (list, tuple)) else [] if context is None else [context]


def _key(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    dim: Direction,
    context: Interventions,
    settings: list,
) -> str:
    """The cache key, or '' when the context holds an intervention without a stable identity."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                str(model.spec),
                model.format(["{}"]),
                weights_fingerprint(model.hf_model),
                list(harmful),
                list(harmless),
                dim.layer,
                dim.position,
                settings,
            ]
        ).encode()
    )
    digest.update(dim.vector.detach().float().cpu().numpy().tobytes())
    for item in _flat(context):
        if isinstance(item, Ablate):
            digest.update(json.dumps(["ablate", None if item.layers is None else list(item.layers)]).encode())
            _update_vectors(digest, as_direction_set(item.directions))
        elif isinstance(item, Add):
            digest.update(json.dumps(["add", item.coeff, item.direction.layer]).encode())
            _update_vectors(digest, DirectionSet([item.direction]))
        else:
            return ""
    return digest.hexdigest()[:24]


def _update_vectors(digest, directions: DirectionSet) -> None:
    digest.update(directions.matrix.detach().float().cpu().numpy().tobytes())
