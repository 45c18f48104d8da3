"""Judges: decide whether a reply refuses (``measures = "refusal"``) or carries out the behaviour asked for
(``measures = "harm"``), each with an agreement report against human labels (`agreement.py`).

Add a judge: a class with ``measures`` and ``judge(instructions, completions) -> list[Verdict]`` in a module
here, registered with ``@JUDGES.register(name)`` and imported below; build it without arguments.
"""

from mechrefusal.measure.judges.base import (
    JUDGES,
    MEASURES,
    Judge,
    Verdict,
    check_refusal_judge,
    measures_of,
    refusal_judge,
)
from mechrefusal.measure.judges.harm import HarmJudge
from mechrefusal.measure.judges.llm import HarmBenchLLMJudge, LLMJudge, StrongRejectLLMJudge
from mechrefusal.measure.judges.prefix import REFUSAL_OPENERS, PrefixJudge
from mechrefusal.measure.judges.substring import REFUSAL_PHRASES, SubstringJudge

__all__ = [
    "JUDGES",
    "MEASURES",
    "HarmBenchLLMJudge",
    "HarmJudge",
    "LLMJudge",
    "PrefixJudge",
    "REFUSAL_OPENERS",
    "StrongRejectLLMJudge",
    "REFUSAL_PHRASES",
    "Judge",
    "SubstringJudge",
    "Verdict",
    "check_refusal_judge",
    "measures_of",
    "refusal_judge",
]
