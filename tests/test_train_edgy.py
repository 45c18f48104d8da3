"""The edgy share of the utility examples (a guard against over-refusal): the repeats that reach it, a
round that trains with it while round 0 stays shareable, and bad input."""

from __future__ import annotations

import json

import pytest

from mechrefusal import data
from mechrefusal.core.errors import SettingError
from mechrefusal.train import TrainSettings, run
from mechrefusal.train import job as train_job
from mechrefusal.train.settings import AFTER_ROUND_ZERO
from mechrefusal.train.targets import Example, TrainingData, with_edgy_share
from tests.test_train import toy_settings

EDGY = data.load("overrefusal", "train")


def edgy_count(examples: list[Example]) -> int:
    return sum(example.instruction in EDGY for example in examples)


def test_edgy_examples_are_repeated_to_reach_the_share():
    other = [Example(prompt, "Sure.") for prompt in data.load("harmless", "train")[:6]]
    edgy = [Example(prompt, "Sure.") for prompt in EDGY[:2]]
    mixed = with_edgy_share(other + edgy, 0.5)
    assert len(mixed) == 12 and edgy_count(mixed) == 6  # each edgy example three times: 6 of 12
    assert len(with_edgy_share(other + edgy, 0.8)) == 6 + 2 * 12  # round(0.8 * 6 / (0.2 * 2)) = 12 repeats
    assert edgy_count(with_edgy_share(other + edgy, 0.3)) == 2  # round(0.3 * 6 / (0.7 * 2)) = 1: as it was
    for share, examples in ((0.0, other + edgy), (0.2, other + edgy), (0.5, other), (0.5, edgy)):
        assert with_edgy_share(examples, share) is examples  # at or below their own share, or one kind only


def test_rounds_after_round_zero_train_with_the_edgy_share(toy_dir, tmp_path, monkeypatch):
    original, train_round = train_job.training_data, train_job.train_round
    seen, own = [], []

    def with_edgy(model, split, **kwargs) -> TrainingData:
        found = original(model, split, **kwargs)
        own.append(edgy_count(found.harmless))  # the capped split's own edgy prompts the toy answered
        harmless = found.harmless + [Example(prompt, "Here is a safe answer.") for prompt in EDGY[:4]]
        return TrainingData(found.harmful, harmless, found.own_refusals, found.compliant)

    def recording(model, reference, harmful, harmless, *args, **kwargs):
        seen.append(harmless)
        return train_round(model, reference, harmful, harmless, *args, **kwargs)

    monkeypatch.setattr(train_job, "training_data", with_edgy)
    monkeypatch.setattr(train_job, "train_round", recording)
    written = run(toy_settings(toy_dir, tmp_path / "run", finder="dim", steps=2, edgy_share=0.5), progress=False)
    assert [path.name for path in written] == ["round-0", "round-1"]
    assert edgy_count(seen[0]) == own[0] + 4  # round 0 as published: the split's own share
    assert edgy_count(seen[1]) / len(seen[1]) == pytest.approx(0.5, abs=0.05) and len(seen[1]) > len(seen[0])
    assert json.loads((written[1] / "mechrefusal.json").read_text())["settings"]["edgy_share"] == 0.5
    assert "edgy_share" in AFTER_ROUND_ZERO


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_an_edgy_share_outside_zero_to_one_is_one_sentence(share):
    with pytest.raises(SettingError, match=rf"edgy_share must lie in \[0, 1\), got {share}"):
        TrainSettings(edgy_share=share)
