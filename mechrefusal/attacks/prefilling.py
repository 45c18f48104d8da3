"""The prefilling attack: the assistant's reply opens with the behaviour's rule-made target.

The user message is the plain behaviour; the attacker writes the first words of the reply ("Sure, here is
a poem about ...") and the model continues them, as an open-weight model's user (or an API that accepts
an assistant prefix) can. No optimisation, so it costs one generation per behaviour. Its budget is how
much of the target is prefilled (``tokens``: the first so many target tokens, ``None`` the whole target),
as Qi et al. (2024) vary it. The campaign shows the prefill followed by the continuation but judges the
continuation alone: the prefill restates the request in the attacker's words, and judged with it an empty,
off-topic or refusing continuation could pass for compliance (the harm judge's length and topic checks read
the prefill; the substring judge's window would be half spent on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase, cache_settings, check_target, preset_fields
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model


@ATTACKS.register("prefilling")
@dataclass
class Prefilling:
    """One test case per behaviour: its text, with the reply prefilled by (the first ``tokens`` tokens of)
    its target. Both presets prefill the whole target; there is nothing to compute, so no ``dtype``."""

    tokens: int | None = None
    """Target tokens prefilled (``None``: the whole target)."""
    caveat: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 1:
            raise SettingError(f"The prefilling attack's tokens must be at least 1 (or None), got {self.tokens}.")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Prefilling:
        """``"cpu"`` or ``"harmbench"``: both prefill the whole target (the attack costs no optimisation)."""
        return cls(**preset_fields("prefilling", {"cpu": {}, "harmbench": {}}, name, overrides))

    def settings(self) -> dict[str, Any]:
        """The options that change the test cases (``tokens``)."""
        return cache_settings(self)

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """The behaviour's text, its reply opened by the (shortened) target; deterministic, seed unused."""
        check_target(behaviour, "prefilling")
        prefill = behaviour.target
        if self.tokens is not None:
            ids = model.tokenizer(prefill, add_special_tokens=False)["input_ids"][: self.tokens]
            prefill = str(model.tokenizer.decode(ids, clean_up_tokenization_spaces=False))
        return [TestCase(behaviour.text, {"prefill_tokens": self.tokens}, prefill=prefill)]
