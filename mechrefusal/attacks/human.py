"""`HumanTemplates`: in-the-wild jailbreak templates with the behaviour in their prompt slot.

HarmBench's protocol for human jailbreaks (Mazeika et al. 2024, ``HumanJailbreaks`` with
``random_subset: 5``, seed 1, in ``configs/method_configs/HumanJailbreaks_config.yaml``): each behaviour
gets its own fixed random subset of the templates; ASR is averaged over a behaviour's templates, then over
behaviours (the campaign does the averaging). Here the subset is the head of a permutation of the
templates drawn with ``random.Random`` seeded by the seed and the behaviour's id, skipping templates whose
filled chat prompt is longer than ``max_prompt_tokens``, so a shorter limit replaces only the templates
that no longer fit. No model computation is involved: the campaign generates and judges.
HarmBench's own templates have no slot (the behaviour follows the template after a blank line) and
its subsets come from one global shuffle per behaviour in file order; the slotted templates here and the
per-behaviour seeding (independent of which behaviours run, or in what order) are this toolkit's choice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase
from mechrefusal.core.errors import SettingError
from mechrefusal.data.jailbreaks import SOURCES, templates
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model


@ATTACKS.register("human")
@dataclass
class HumanTemplates:
    """A fixed random subset of human-written jailbreak templates per behaviour, filled with its request."""

    n_templates: int = 3
    """Templates per behaviour (HarmBench: 5)."""
    source: str = "all"
    """``pyrit`` (488 in-the-wild templates), ``gptfuzzer`` (77) or ``all`` (565)."""
    max_prompt_tokens: int | None = 1024
    """Skip templates whose filled chat prompt has more tokens than this (None: keep all)."""
    caveat: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_templates < 1:
            raise SettingError(f"n_templates must be at least 1, not {self.n_templates}.")
        if self.source not in SOURCES:
            raise SettingError(f"Unknown template source {self.source!r}; choose one of {', '.join(SOURCES)}.")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise SettingError(f"max_prompt_tokens must be at least 1 or None, not {self.max_prompt_tokens}.")

    @classmethod
    def preset(cls, name: str) -> HumanTemplates:
        """``cpu``: 3 templates of at most 1,024 prompt tokens; ``harmbench``: 5 templates, no length limit."""
        if name == "cpu":
            return cls()
        if name == "harmbench":
            return cls(n_templates=5, max_prompt_tokens=None)
        raise SettingError(f"Unknown preset {name!r} for the human attack; choose cpu or harmbench.")

    def settings(self) -> dict[str, Any]:
        return {"n_templates": self.n_templates, "source": self.source, "max_prompt_tokens": self.max_prompt_tokens}

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """Up to ``n_templates`` filled templates; fewer only where fewer fit ``max_prompt_tokens``."""
        pool = templates(self.source)
        order = random.Random(f"{seed}:{behaviour.id}").sample(pool, len(pool))
        cases: list[TestCase] = []
        for template in order:
            prompt = template.fill(behaviour.text)
            if self.max_prompt_tokens is None or self._length(model, prompt) <= self.max_prompt_tokens:
                cases.append(TestCase(prompt, {"template": template.name, "source": template.source}))
                if len(cases) == self.n_templates:
                    break
        if not cases:
            raise SettingError(
                f"No template of source {self.source!r} fits max_prompt_tokens={self.max_prompt_tokens} "
                "with this behaviour; raise the limit or set it to None."
            )
        return cases

    @staticmethod
    def _length(model: Model, prompt: str) -> int:
        return len(model.chat.encode(model.chat.prompt(prompt)))
