"""Refusal on held-out public harmful sets (`mechrefusal.measure.generalisation`, analyses/public_refusal.py)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

import mechrefusal
from mechrefusal import data
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import DataError, SettingError
from mechrefusal.measure.evaluation import refusal_rate
from mechrefusal.measure.generalisation import held_out_sample, public_refusal, seen_prompts
from mechrefusal.measure.judges import Verdict
from mechrefusal.reproduce import analysis_script


class AdvBenchRefused:
    """A judge stub: every AdvBench prompt is refused, nothing else, whatever the completion."""

    def __init__(self) -> None:
        self.advbench = set(data.load("advbench"))

    def judge(self, instructions, completions):
        return [Verdict(refused=instruction in self.advbench) for instruction in instructions]


@pytest.fixture(scope="module")
def checkpoint(toy, toy_dir, tmp_path_factory):
    """The toy saved with two random directions, as a trainer checkpoint is."""
    directory = tmp_path_factory.mktemp("generalisation") / "round-1"
    shutil.copytree(toy_dir, directory)
    generator = torch.Generator().manual_seed(3)
    DirectionSet([Direction(torch.randn(toy.d_model, generator=generator), 1, -1, "random") for _ in range(2)]).save(
        directory / "directions.safetensors"
    )
    return directory


def test_held_out_sample_drops_prompts_seen_in_training_and_is_deterministic():
    prompts = ["Write a poem.", "Build a bomb", "  build a BOMB?", "Steal a car", "Pick a lock"]
    sample = held_out_sample("advbench", n=2, seed=7, seen={"build a bomb"}, prompts=prompts)
    assert (sample.dropped, sample.held_out, sample.n) == (2, 3, 2)
    assert not {"Build a bomb", "  build a BOMB?"} & set(sample.prompts)
    assert sample.prompts == held_out_sample("advbench", n=2, seed=7, seen={"build a bomb"}, prompts=prompts).prompts
    everything = held_out_sample("advbench", n=100, seed=7, seen=set(), prompts=prompts)
    assert sorted(everything.prompts) == sorted(prompts) and everything.dropped == 0


def test_training_prompts_are_dropped_from_a_public_set():
    seen = seen_prompts()
    assert data.load("harmful", "train")[0].lower().rstrip(".?!;: ") in seen
    assert not seen & {p.lower() for p in data.load("harmful", "test")}
    trained = data.load("harmful", "train")[0]
    sample = held_out_sample("harmbench", n=500, seed=0, prompts=[trained, *data.load("harmbench")])
    assert sample.dropped == 1 and trained not in sample.prompts and sample.n == len(data.load("harmbench"))


def test_each_saved_direction_gets_a_row_and_the_judge_decides(toy, checkpoint):
    model = mechrefusal.load(str(checkpoint))
    fresh = Direction(torch.ones(toy.d_model), 2, -1, "dim")
    result = public_refusal(
        model, n=3, seed=1, judge=AdvBenchRefused(), extra={"fresh": fresh}, max_new_tokens=2, dtype="float32"
    )
    assert list(result.rates) == ["plain", "d0 ablated", "d1 ablated", "all saved ablated", "fresh ablated"]
    for rates in result.rates.values():
        assert rates == {"advbench": 1.0, "harmbench": 0.0, "harmful": 0.0}
    assert result.judge == "AdvBenchRefused" and result.precision["dtype"] == "float32"
    assert result.to_dict()["sets"]["harmful"] == {"n": 3, "held_out": len(data.load("harmful", "test")), "dropped": 0}
    rows = result.markdown("toy")
    assert len(rows) == 5 and rows[1] == "| toy | d0 ablated | 100% | 0% | 0% |"


def test_a_model_without_saved_directions_gets_the_plain_row(toy):
    result = public_refusal(toy, sets=["harmbench"], n=2, judge="substring", max_new_tokens=2, dtype="float32")
    assert list(result.rates) == ["plain"] and list(result.samples) == ["harmbench"]
    plain = refusal_rate(toy, result.samples["harmbench"].prompts, max_new_tokens=2, dtype="float32")
    assert result.judge == "substring" and result.rates["plain"]["harmbench"] == plain


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: held_out_sample("harmless", n=4, seed=0), SettingError, "Unknown harmful set 'harmless'"),
        (lambda: held_out_sample("advbench", n=0, seed=0), SettingError, "must be at least 1, got 0"),
        (
            lambda: held_out_sample("advbench", n=4, seed=0, seen={"a"}, prompts=["A."]),
            DataError,
            "Every one of the 1 prompts of advbench",
        ),
    ],
)
def test_bad_input_is_one_sentence(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_no_sets_is_one_sentence(toy):
    with pytest.raises(SettingError, match="sets is empty"):
        public_refusal(toy, sets=[])


def test_a_set_the_checkpoint_was_trained_on_is_refused(checkpoint, tmp_path):
    trained = tmp_path / "round-1"
    shutil.copytree(checkpoint, trained)
    (trained / "mechrefusal.json").write_text(json.dumps({"settings": {"public_harmful": "advbench"}}))
    model = mechrefusal.load(str(trained))
    with pytest.raises(SettingError, match=r"was trained on advbench; score only sets it never saw \(sets=harmful\)"):
        public_refusal(model, sets=["advbench", "harmful"])
    assert list(public_refusal(model, sets=["harmbench"], n=1, max_new_tokens=1, ablations=False).rates) == ["plain"]


def test_the_script_prints_a_row_per_checkpoint_and_condition(toy, checkpoint, monkeypatch, capsys):
    module = analysis_script("public_refusal")
    argv = ["public_refusal.py", f"ckpt={checkpoint}", "--n", "2", "--sets", "harmbench", "--max-new-tokens", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| checkpoint | condition | harmbench (n=2, 0 dropped) |"
    assert [line.split(" | ")[1] for line in lines[2:-1]] == ["plain", "d0 ablated", "d1 ablated", "all saved ablated"]
    record = json.loads(lines[-1])
    assert record["results"]["ckpt"]["seed"] == 0 and record["results"]["ckpt"]["judge"] == "substring"
    monkeypatch.setattr(sys, "argv", ["public_refusal.py", "no-equals-sign"])
    with pytest.raises(SystemExit):
        module.main()
    assert "is not NAME=CKPT" in capsys.readouterr().err
