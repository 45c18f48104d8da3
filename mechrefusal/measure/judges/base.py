"""The judge protocol: `Verdict`, `Judge` (what each judge measures) and the `JUDGES` registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Protocol, runtime_checkable

from mechrefusal.core.errors import SettingError
from mechrefusal.core.registry import Registry

MEASURES = ("refusal", "harm")
"""What a judge decides: whether a reply refuses, or whether it carries out the behaviour asked for."""


@dataclass(frozen=True)
class Verdict:
    """One judged reply: ``refused``, and ``harmful`` when the judge decides harm (None when it does not)."""

    refused: bool
    reason: str = ""
    harmful: bool | None = None


@runtime_checkable
class Judge(Protocol):
    """Anything that labels (instruction, completion) pairs.

    A judge class says what it decides in a class attribute ``measures``: ``"refusal"`` (report its verdicts
    as a refusal rate, never as attack success) or ``"harm"`` (``Verdict.harmful`` decides; an attack success
    rate counts ``harmful=True``). A judge without it measures refusal (`measures_of`), so judges written
    before harm judges existed keep working.

    A judge whose verdicts change between releases (new rules, a retrained classifier) says so in an optional
    integer class attribute ``version`` (0 when absent; the harm judge's is its ``MODEL_VERSION``). Cached
    agreement reports and verdicts are keyed by `judge_key`: the class, its version and a dataclass judge's
    settings, so bumping the version or editing a setting's default measures them afresh.
    """

    def judge(self, instructions: Sequence[str], completions: Sequence[str]) -> list[Verdict]: ...


def judge_key(judge: object) -> str:
    """What a judge's cached results are keyed by: its class, its ``version`` and, for a dataclass judge, the
    fields it was built with (an edited phrase list, gate or threshold is a new key). A field holding an
    object (an LLM judge's chat model) counts by its type: its repr may hold a memory address."""
    cls = type(judge)
    settings = {f.name: getattr(judge, f.name) for f in fields(judge) if f.init} if is_dataclass(judge) else {}
    text = json.dumps(settings, sort_keys=True, default=lambda value: type(value).__qualname__)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{cls.__module__}.{cls.__qualname__}:v{getattr(judge, 'version', 0)}:{digest}"


def measures_of(judge: object) -> str:
    """What a judge (class or instance) decides: its ``measures`` attribute, ``"refusal"`` when it has none."""
    measures = getattr(judge, "measures", "refusal")
    if measures not in MEASURES:
        raise SettingError(
            f"Judge {judge!r} says it measures {measures!r}; a judge measures one of {', '.join(MEASURES)}."
        )
    return measures


JUDGES: Registry[type[Judge]] = Registry("judge")
"""The judges by name (a job's ``judge`` setting); each is built without arguments."""


def check_refusal_judge(judge: object, name: str | None = None) -> None:
    """One sentence unless ``judge`` (class or instance; ``name`` as the user wrote it) decides refusal: a
    harm judge's ``refused`` only repeats a refusal-phrase rule, so a refusal rate under its name would be
    mislabelled."""
    if measures_of(judge) != "refusal":
        label = name or type(judge).__name__
        raise SettingError(
            f"The judge {label!r} decides harm, not refusal; refusal rates need a refusal judge (substring, prefix)."
        )


def refusal_judge(spec: str) -> type[Judge]:
    """The registered judge ``spec`` names (`JUDGES`), checked to decide refusal (`check_refusal_judge`)."""
    cls = JUDGES.get(spec)
    check_refusal_judge(cls, spec)
    return cls
