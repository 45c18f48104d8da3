"""Recovery examples (Qi et al., 2024, "Safety Alignment Should Be Made More Than Just a Few Tokens Deep"):
a harmful instruction whose assistant turn starts with the first k tokens of a compliant answer and then
turns to the refusal. The compliant start is context, not trained; the loss is on the refusal. They teach
the model to refuse after it has begun to comply, which is the state a prefilling attack forces.

The compliant answers are the reference model's own replies to the harmful training prompts that the judge
does not call refusals (`TrainingData.compliant`), not the rule-made targets the prefilling attack uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mechrefusal.core.errors import SettingError
from mechrefusal.models import Model
from mechrefusal.train.targets import Example


@dataclass(frozen=True)
class Recovery:
    """Turns each harmful example that has a compliant answer into a recovery example with probability
    ``share``, its opening a uniformly drawn 1 to ``max_tokens`` tokens of that answer."""

    openings: dict[str, list[int]]
    """Instruction -> the token ids of a compliant answer to it."""
    share: float
    max_tokens: int
    tokenizer: object
    generator: torch.Generator

    def __call__(self, examples: Sequence[Example]) -> list[Example]:
        turned = []
        for example in examples:
            opening = self.openings.get(example.instruction)
            if not opening or torch.rand((), generator=self.generator).item() >= self.share:
                turned.append(example)
                continue
            k = int(torch.randint(1, min(len(opening), self.max_tokens) + 1, (), generator=self.generator))
            prefill = self.tokenizer.decode(opening[:k])  # type: ignore[attr-defined]
            reply = example.reply if prefill[-1:].isspace() else " " + example.reply.lstrip()
            turned.append(Example(example.instruction, reply, prefill))
        return turned


def recovery(
    model: Model, compliant: Sequence[Example], share: float, max_tokens: int, generator: torch.Generator
) -> Recovery:
    """The recovery examples of a round, from the reference's compliant replies (`TrainingData.compliant`)."""
    if not compliant:
        raise SettingError(
            "recovery_share needs compliant replies to open recovery examples, but the reference model refused "
            "every harmful training prompt it was asked; set recovery_share to 0."
        )
    openings = {e.instruction: model.tokenizer(e.reply, add_special_tokens=False)["input_ids"] for e in compliant}
    return Recovery(openings, share, max_tokens, model.tokenizer, generator)
