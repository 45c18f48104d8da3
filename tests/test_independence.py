"""Independence measurements: the batched sweep against one-by-one scores, the breaking-set search on
known answers, and the toy refusing model (one refusal direction: one direction breaks it)."""

from __future__ import annotations

import json

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Direction, DirectionSet, data
from mechrefusal.analysis.independence import breaking_search, measure_independence, standard_subsets
from mechrefusal.directions import SelectionFilters
from mechrefusal.measure.sweep import ablation_scores

PROMPTS = ["Hi", "Write a short poem about the sea", "What is 2 + 2?", "How do I pick a lock?", "Name a colour"]


def random_set(d_model: int, k: int, seed: int = 0, layer: int = 1) -> DirectionSet:
    generator = torch.Generator().manual_seed(seed)
    return DirectionSet([Direction(torch.randn(d_model, generator=generator), layer, -1, "random") for _ in range(k)])


def test_standard_subsets_are_none_singles_pairs_cumulative_all():
    assert standard_subsets(1) == [(), (0,)]
    assert standard_subsets(3) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    four = standard_subsets(4)
    assert len(four) == 1 + 4 + 6 + 1 + 1 and four[-2:] == [(0, 1, 2), (0, 1, 2, 3)]


def test_batched_sweep_equals_one_ablation_at_a_time(tiny_on_device):
    directions = random_set(tiny_on_device.d_model, 3)
    subsets = standard_subsets(3)
    swept = ablation_scores(tiny_on_device, PROMPTS, directions, subsets, batch_size=2, stack=3)
    for row, subset in zip(swept, subsets):
        ablation = Ablate(DirectionSet([directions[i] for i in subset])) if subset else None
        expected = mechrefusal.refusal_score(tiny_on_device, PROMPTS, intervention=ablation)
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)
    assert (swept[1:] - swept[0]).abs().max() > 1e-3  # ablating random directions does change the scores


def test_a_pair_ablates_the_same_span_in_either_order(tiny_model):
    directions = random_set(tiny_model.d_model, 2, seed=3)
    forward, backward = ablation_scores(tiny_model, PROMPTS, directions, [(0, 1), (1, 0)])
    torch.testing.assert_close(forward, backward, atol=1e-5, rtol=1e-5)


def test_sweep_errors_are_clear(tiny_model):
    directions = random_set(tiny_model.d_model, 2)
    with pytest.raises(ValueError, match=r"Subset \(0, 5\) names a direction outside 0..1"):
        ablation_scores(tiny_model, PROMPTS, directions, [(0, 5)])
    with pytest.raises(ValueError, match="at least one prompt and one subset"):
        ablation_scores(tiny_model, [], directions, [()])
    with pytest.raises(ValueError, match="stack must be at least 1"):
        ablation_scores(tiny_model, PROMPTS, directions, [()], stack=0)


def oracle(needed: set[int]):
    """Refusal that breaks only when every direction of ``needed`` is ablated; the score counts them."""

    def rate(subset):
        return 0.1 if needed <= set(subset) else 0.9

    def rank(candidates):
        return [-len(needed & set(subset)) for subset in candidates]

    return rate, rank


def test_breaking_search_finds_a_redundant_triple_greedily():
    rate, rank = oracle({1, 2, 3})
    found, judged = breaking_search(5, rate, rank)
    assert found == (1, 2, 3)
    assert judged[:6] == [(), (0,), (1,), (2,), (3,), (4,)] and judged[-1] == (1, 2, 3)


def test_breaking_search_known_answers():
    assert breaking_search(3, lambda s: 0.2, lambda c: [0.0] * len(c))[0] == ()  # never refused
    rate, rank = oracle({2})
    assert breaking_search(3, rate, rank)[0] == (2,)
    assert breaking_search(3, lambda s: 0.9, lambda c: [0.0] * len(c))[0] is None  # nothing breaks it
    rate, rank = oracle({0, 1, 2})
    assert breaking_search(3, rate, rank)[0] == (0, 1, 2)


@pytest.fixture(scope="module")
def toy_result(toy):
    val = data.load("harmful", "val"), data.load("harmless", "val")
    found = mechrefusal.find_direction(
        toy,
        data.load("harmful", "train")[:64],
        data.load("harmless", "train")[:64],
        harmful_val=val[0],
        harmless_val=val[1],
        filters=SelectionFilters(max_kl=1.0),
        progress=False,
    )
    random = random_set(toy.d_model, 1, seed=7, layer=found.layer)[0]
    random = Direction(random.vector / random.vector.norm() * found.vector.norm(), found.layer, -1, "random")
    directions = DirectionSet([random, found])
    return measure_independence(
        toy,
        directions,
        data.load("harmful", "test")[:24],
        data.load("harmless", "test")[:24],
        labels=["random", "dim"],
        max_new_tokens=8,
        dtype="float32",
        progress=False,
    )


def test_one_refusal_direction_gives_a_fail_closed_summary_of_one(toy_result):
    summary = toy_result.summary
    assert summary.baseline_rate > 0.6
    assert summary.directions_to_break == 1 and summary.breaking_set == ["dim"]
    assert summary.weakest == "dim" and summary.min_single_rate < 0.2
    assert not summary.fail_closed
    assert toy_result.judged[(0,)].rate > 0.5  # the random direction alone leaves refusal
    assert toy_result.score((1,)) < toy_result.score(()) - 3
    assert abs(toy_result.score((0,)) - toy_result.score(())) < 1
    induce = dict(zip(toy_result.labels, toy_result.induce.tolist()))
    assert induce["dim"] > toy_result.harmless_score + 3


def test_matrices_are_symmetric_where_they_must_be(toy_result):
    cosines = toy_result.cosines
    torch.testing.assert_close(cosines, cosines.T)
    torch.testing.assert_close(cosines.diagonal(), torch.ones(2))
    pairs = toy_result.pair_scores()
    torch.testing.assert_close(pairs, pairs.T)
    assert pairs[0, 0] == pytest.approx(toy_result.score((0,)))
    # the shift matrix need not be symmetric, but its diagonal is each direction's own cosine (positive)
    assert toy_result.shifts.shape == (2, 2, len(toy_result.shift_layers))
    assert (toy_result.shifts.mean(dim=-1).diagonal() > 0).all()


def test_result_is_json(toy_result):
    result = json.loads(json.dumps(toy_result.to_dict(), allow_nan=False))
    assert result["labels"] == ["random", "dim"] and result["summary"]["directions_to_break"] == 1
    assert len(result["configurations"]) == len(standard_subsets(2))
    assert result["cumulative_scores"][0] == pytest.approx(result["baseline_score"])
    assert result["cumulative_scores"][-1] == pytest.approx(result["all_score"])
    assert {"none", "random", "dim", "random,dim"} == set(result["examples"])


def test_bad_inputs_are_clear_errors(tiny_model):
    directions = random_set(tiny_model.d_model, 2)
    with pytest.raises(ValueError, match="Got 1 labels for 2 directions"):
        measure_independence(tiny_model, directions, PROMPTS, PROMPTS, labels=["a"], progress=False)
    with pytest.raises(ValueError, match="this set is empty"):
        measure_independence(tiny_model, DirectionSet([]), PROMPTS, PROMPTS, progress=False)
    with pytest.raises(ValueError, match="held-out harmful and harmless"):
        measure_independence(tiny_model, directions, [], PROMPTS, progress=False)


def test_the_weakest_of_tied_singles_is_the_lower_scoring_one(tiny_model):
    """The tiny model never refuses: every single ablation ties at 0%, and the weakest is the one whose
    refusal score falls most, as the breaking search breaks ties (before: the first direction, always)."""
    directions = random_set(tiny_model.d_model, 3)
    result = measure_independence(tiny_model, directions, PROMPTS, PROMPTS, max_new_tokens=2, progress=False)
    assert {result.judged[(i,)].rate for i in range(3)} == {0.0}
    scores = [result.score((i,)) for i in range(3)]
    assert result.summary.weakest == f"d{scores.index(min(scores))}"
