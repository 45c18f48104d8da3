"""Results read well in a notebook: each public result's repr is one short line with its counts, shapes and
headline numbers, never a whole tensor or a list of prompts."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import Batch, Direction, DirectionSet, MeanActivations, Verdict
from mechrefusal.analysis.independence import FailClosedSummary, IndependenceResult
from mechrefusal.analysis.projections import LayerProfile
from mechrefusal.directions.rdo_targets import RDOTargets
from mechrefusal.directions.selection import CandidateScores
from mechrefusal.measure.evaluation import JudgedCompletions
from mechrefusal.models.model import ReplyBatch
from mechrefusal.train.loop import RoundResult
from mechrefusal.train.targets import Example, TrainingData

PROMPT = "Explain in great detail how the tides work"


def _judged(refused: list[bool]) -> JudgedCompletions:
    return JudgedCompletions([PROMPT] * len(refused), ["I'm sorry"] * len(refused), [Verdict(r) for r in refused])


def _directions(k: int) -> DirectionSet:
    return DirectionSet([Direction(torch.full((576,), 0.5), 10 + i, -1, "dim") for i in range(k)])


def _scores() -> CandidateScores:
    bypass = torch.tensor([[1.0, -2.0], [-3.0, -4.0], [float("nan"), float("nan")]])
    passed = torch.tensor([[True, True], [True, False], [False, False]])
    return CandidateScores(
        bypass, bypass.abs(), bypass.abs() / 10, passed, passed, [-2, -1], baseline_harmful=3.5, baseline_harmless=-6.0
    )


def _independence() -> IndependenceResult:
    k = 12
    judged = {(): _judged([True] * 9 + [False]), tuple(range(k)): _judged([True] + [False] * 9)}
    summary = FailClosedSummary(0.5, 0.9, 0.2, "d3", 2, ["d3", "d5"])
    return IndependenceResult(
        labels=[f"d{i}" for i in range(k)],
        cosines=torch.eye(k),
        subsets=[(), tuple(range(k))],
        harmful_scores=torch.randn(2, 500),
        judged=judged,
        harmless_score=-4.0,
        induce=torch.randn(k),
        shifts=torch.randn(k, k, 30),
        shift_layers=list(range(30)),
        summary=summary,
    )


CASES = [
    (lambda: Direction(torch.full((576,), 0.5), 14, -1, "dim"), ["layer=14", "position=-1", "'dim'", "norm=12"]),
    (lambda: _directions(3), ["k=3", "d_model=576", "dim@12/-1"]),
    (lambda: _directions(40), ["k=40", "(+34)"]),
    (lambda: DirectionSet(), ["k=0"]),
    (
        lambda: MeanActivations(torch.zeros(30, 6, 576, dtype=torch.float64), list(range(30)), list(range(-6, 0)), 128),
        ["n_prompts=128", "layers=0..29", "positions=-6..-1", "(30, 6, 576)"],
    ),
    (_scores, ["grid=3x2", "passed=3", "finalists=3", "best bypass=-3 at layer 1 position -2", "harmful=3.5"]),
    (
        lambda: RDOTargets([PROMPT] * 32, ["Sure"] * 31, [PROMPT] * 32, ["No."] * 30, ["Yes"] * 32, "f" * 64),
        ["harmful=32", "compliant=31", "refusals=30", "answers=32", "'ffffffffffff'"],
    ),
    (lambda: _judged([True] * 30 + [False] * 2), ["n=32", "refusal_rate=0.938"]),
    (lambda: FailClosedSummary(0.5, 0.9, 0.2, "d3", None, None), ["fail_closed=False", "0.9", "0.2 ('d3')", "None"]),
    (_independence, ["k=12", "d0, d1", "(+6)", "baseline_rate=0.9", "all_rate=0.1", "directions_to_break=2"]),
    (
        lambda: LayerProfile(-1, [float(i) for i in range(30)], [None, *(i / 10 for i in range(29))]),
        ["position=-1", "layers=30", "peak separation 2.8 at layer 29"],
    ),
    (
        lambda: RoundResult(200, [2.0] * 199 + [0.5], [1.0, 0.75], 0.75, 305.04),
        ["steps=200", "last_train_loss=0.5", "best_val_loss=0.75", "evals=2", "wall_time_s=305.0"],
    ),
    (
        lambda: TrainingData([Example(PROMPT, "No.")] * 64, [Example(PROMPT, "Yes")] * 60, True, []),
        ["harmful=64", "harmless=60", "own_refusals=True", "compliant=0"],
    ),
    (
        lambda: Batch(torch.ones(4, 23, dtype=torch.long), torch.ones(4, 23, dtype=torch.long)),
        ["Batch(", "batch=4", "seq=23", "tokens=92"],
    ),
    (
        lambda: ReplyBatch(
            torch.ones(4, 40, dtype=torch.long), torch.ones(4, 40, dtype=torch.long), torch.ones(4, 40, dtype=bool)
        ),
        ["ReplyBatch(", "batch=4", "seq=40", "reply_tokens=160"],
    ),
]


@pytest.mark.parametrize(("make", "expected"), CASES)
def test_repr_is_one_short_line_with_the_headline_numbers(make, expected):
    text = repr(make())
    assert "\n" not in text and len(text) < 200, text
    assert PROMPT not in text and "tensor(" not in text, text
    for part in expected:
        assert part in text, (part, text)
