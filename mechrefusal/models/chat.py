"""Chat formatting with the tokenizer's own template, and the post-instruction token positions.

The post-instruction tokens are the template tokens between the end of the user's message and the
start of the assistant's reply (``<|im_end|>\\n<|im_start|>assistant\\n`` in ChatML). They are found by
rendering two different messages and taking the longest common token suffix, so nothing is
hard-coded per model family.

A system message goes in the template's system role; a template without one (Gemma's raises an error
on it) gets the system text at the start of the user's message instead, as Gemma 3's own template does.

Templates that write today's date into the prompt (Llama 3.x's "Today Date: ...") get a fixed one,
`TEMPLATE_DATE`: otherwise every prompt, reply, refusal rate and cache key would change from one day to the next.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from mechrefusal.core.errors import ModelLoadError
from mechrefusal.core.sequences import common_prefix_length

# Two probe messages whose last tokens differ in any tokenizer.
_PROBES = ("Name three colours", "Is 7 a prime number?")
TEMPLATE_DATE = "26 Jul 2024"
"""The date a template's ``date_string`` is given (Llama 3.x's own default where no date is passed), so that
prompts are the same whatever day they are rendered."""


@dataclass(frozen=True)
class ChatFormat:
    """Turns plain instructions into chat prompts ending with the assistant's turn."""

    tokenizer: PreTrainedTokenizerBase
    system: str | None = None
    post_instruction_ids: tuple[int, ...] = field(init=False)
    system_role: bool = field(init=False)
    """False where ``system`` is folded into the user's message (the template has no system role)."""

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"The tokenizer of {self.tokenizer.name_or_path!r} has no chat template; mechrefusal "
                "studies chat models, so give it one (tokenizer.chat_template = ...) or load a chat model."
            )
        if _dates_itself(self.tokenizer.chat_template):
            warnings.warn(
                f"The chat template of {self.tokenizer.name_or_path!r} writes today's date into every prompt, "
                "so its replies, rates and cached results may change from one day to the next.",
                stacklevel=3,
            )
        object.__setattr__(self, "system_role", self.system is None or _renders_system(self.tokenizer))
        probes = [self.encode(self.prompt(text)) for text in _PROBES]
        suffix = probes[0][len(probes[0]) - common_prefix_length([probe[::-1] for probe in probes]) :]
        if not suffix:
            raise ModelLoadError(
                f"The chat template of {self.tokenizer.name_or_path!r} adds no tokens after the user's "
                "message, so there are no post-instruction positions to read directions from."
            )
        object.__setattr__(self, "post_instruction_ids", tuple(suffix))

    def prompt(self, instruction: str) -> str:
        """Render one user instruction as a prompt that ends where the assistant starts to reply."""
        if self.system is None:
            messages = [{"role": "user", "content": instruction}]
        elif self.system_role:
            messages = [{"role": "system", "content": self.system}, {"role": "user", "content": instruction}]
        else:
            messages = [{"role": "user", "content": f"{self.system}\n\n{instruction}"}]
        return self.render(messages)

    def render(self, messages: list[dict[str, str]]) -> str:
        """Render a conversation with the template, ending where the assistant's next message starts."""
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, date_string=TEMPLATE_DATE
        )
        return str(rendered)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt (the template already holds any special tokens)."""
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    @property
    def post_instruction_positions(self) -> list[int]:
        """Positions of the post-instruction tokens counted from the end (-1 = last prompt token)."""
        n = len(self.post_instruction_ids)
        return list(range(-n, 0))


def _renders_system(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template accepts a system message."""
    from jinja2 import TemplateError

    try:
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], tokenize=False
        )
    except TemplateError:
        return False
    return True


def _dates_itself(template: str | dict) -> bool:
    """Whether a template reads the clock other than as the fallback of a ``date_string`` it is given."""
    text = str(template)
    return "strftime_now" in text and "date_string" not in text
