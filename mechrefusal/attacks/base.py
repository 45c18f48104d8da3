"""`Attack`: the protocol every jailbreak attack implements, its test cases, and `ATTACKS`.

An attack turns one behaviour (a harmful request and the rule-made target reply it aims for) into test
cases: user messages to send to the model. It runs through the toolkit's `Model` with an optional
intervention active, so "GCG against the model with d0 ablated" is one argument. Its constructor takes
its own options, the budget among them; its `run` takes the model, the behaviour, the intervention and a
seed, and is deterministic given them (a resumed campaign gives the same result).
To add one, write the class in one file and register it (``ATTACKS.register("name")``) or name it as
``"package.module:Class"``. White-box attacks may also open the assistant's reply (``TestCase.prefill``)
and act on the model while it answers (an optional ``generation_intervention(model, case)`` method); one that
cannot run on every model says so before a campaign starts (an optional ``check(model)`` method).
One whose intervention is a fixed edit of the model (the same for every prompt: an ablation) says so with
a class attribute ``fixed_edit = True``, and the campaign measures what the edit costs on harmless prompts;
one that makes several test cases of a behaviour under different edits names the ``info`` key that tells
them apart with a class attribute ``variant`` (the scoreboard gives each its own row).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from mechrefusal.core.errors import SettingError
from mechrefusal.core.registry import Registry
from mechrefusal.interventions import Interventions
from mechrefusal.measure.judges import SubstringJudge
from mechrefusal.models import Model


@dataclass(frozen=True)
class Behaviour:
    """A harmful request and the opening of the reply an attack tries to force (``target``)."""

    text: str
    target: str

    @property
    def id(self) -> str:
        """A stable short id: the first 12 hex digits of the text's sha256."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class TestCase:
    """One user message an attack produced for a behaviour, with what the attack knows about it."""

    __test__ = False  # not a pytest test class, whatever its name

    prompt: str
    """The whole user message (the model's chat template is applied around it)."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable details: the final target loss, steps run, template name, ..."""
    prefill: str = ""
    """The opening of the assistant's reply, written by the attacker (prefilling attacks); the model continues
    it. The completion shown is ``prefill`` + the continuation; the judges read the continuation alone."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``prefill`` only when set)."""
        return {"prompt": self.prompt, "info": self.info, **({"prefill": self.prefill} if self.prefill else {})}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TestCase:
        return cls(fields["prompt"], fields.get("info", {}), fields.get("prefill", ""))


@runtime_checkable
class Attack(Protocol):
    """Anything that turns a behaviour into test cases against a model."""

    caveat: str
    """Empty, or why its numbers are not comparable with the literature's (e.g. "weak attacker: ...")."""

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """Test cases for ``behaviour``, deterministic given ``seed``."""
        ...

    def settings(self) -> dict[str, Any]:
        """The options that change its test cases (budget included), for the campaign's cache key."""
        ...


def check_attack(attack: Attack, model: Model) -> None:
    """One sentence now if ``attack`` cannot run on ``model`` (no saved directions where it needs them, a cone
    wider than the model, layers outside it), rather than when its turn comes in a long campaign. An attack
    supplies it with an optional method ``check(model)``."""
    method = getattr(attack, "check", None)
    if method is not None:
        method(model)


def generation_intervention(attack: Attack, model: Model, case: TestCase) -> Interventions:
    """The intervention a white-box attack adds while its test case is answered (an ablation, a perturbation
    of embeddings or activations rebuilt from ``case.info``), or None for a prompt attack. An attack supplies
    it with an optional method of that name."""
    method = getattr(attack, "generation_intervention", None)
    return None if method is None else method(model, case)


MODEL_EDIT, PER_PROMPT, NONE = "model edit", "per prompt", "none"
"""What an attack does to the model while its test cases are answered (`intervention_kind`)."""


def intervention_kind(attack: Attack) -> str:
    """``"model edit"`` (a `generation_intervention` that is the same whatever the prompt, declared with
    ``fixed_edit = True``: it has a harmless KL), ``"per prompt"`` (one made for its test case: a latent
    perturbation, an embedding suffix) or ``"none"`` (a prompt attack, prefilling)."""
    if getattr(attack, "generation_intervention", None) is None:
        return NONE
    return MODEL_EDIT if getattr(attack, "fixed_edit", False) else PER_PROMPT


ATTACKS: Registry[type[Attack]] = Registry("attack")
"""The attacks by name (the attack job's ``attacks`` setting)."""


def preset_fields(
    attack: str, presets: Mapping[str, Mapping[str, Any]], name: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The fields of ``attack``'s preset ``name`` with ``overrides`` on top (an unknown name is one sentence)."""
    if name not in presets:
        raise SettingError(f"Unknown {attack} preset {name!r}; choose one of {', '.join(presets)}.")
    return {**presets[name], **overrides}


def cache_settings(attack: Any) -> dict[str, Any]:
    """A dataclass attack's fields that change its test cases: all but ``progress`` and ``caveat``."""
    return {key: value for key, value in asdict(attack).items() if key not in ("progress", "caveat")}


def check_positive(owner: str, values: Mapping[str, int | float]) -> None:
    """One sentence, ``"{owner} {name} must be positive and finite, got {value}."``, for the first of
    ``values`` that is zero, negative, infinite or NaN (an infinite or NaN budget passes a ``> 0`` check)."""
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise SettingError(f"{owner} {name} must be positive and finite, got {value}.")


def check_target(behaviour: Behaviour, attack: str) -> None:
    """One sentence when the behaviour's target (the reply opening an attack aims for) is empty."""
    if not behaviour.target.strip():
        raise SettingError(
            f"Behaviour {behaviour.text!r} has an empty target; {attack} needs a reply opening to aim for."
        )


STOP_CHECK = "words, not all capitals, no refusal phrase"
"""What `broke_through` asks of a reply; in the settings of the attacks that stop on it, so that their test
cases cached under an earlier check (which stopped on an empty reply) are made again."""


def broke_through(instructions: Sequence[str], replies: Sequence[str]) -> list[bool]:
    """An attack's early-stop check of each greedy reply: it has words, is not all capitals and carries no
    refusal phrase (`SubstringJudge`). An empty or shouted reply is no success, as in AutoDAN's reference
    check, so a search does not stop on one; the campaign's judges score the final test cases anyway."""
    verdicts = SubstringJudge().judge(instructions, replies)
    return [bool(r.strip()) and not r.strip().isupper() and not v.refused for r, v in zip(replies, verdicts)]
