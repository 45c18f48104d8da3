"""ROC AUC and the share past a threshold: known answers, bad input, and the analysis script on the toy."""

from __future__ import annotations

import json
import sys

import jaxtyping
import pytest
import torch

from mechrefusal.core.errors import SettingError
from mechrefusal.measure.separation import roc_auc, share_above
from mechrefusal.reproduce import analysis_script


def test_auc_is_one_for_perfect_separation_zero_reversed_and_half_for_ties():
    high, low = torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0])
    assert roc_auc(high, low) == 1.0
    assert roc_auc(low, high) == 0.0
    assert roc_auc(torch.ones(4), torch.ones(3)) == 0.5


def test_auc_counts_pairs_by_hand():
    # six pairs: 2>1, 4>1, 4>3, 3>1 above; 2<3 below; 3=3 a tie counted half -> (4 + 0.5) / 6
    assert roc_auc(torch.tensor([2.0, 4.0, 3.0]), torch.tensor([1.0, 3.0])) == pytest.approx(4.5 / 6)


def test_share_above_places_the_threshold_on_the_positive_quantile():
    positive = torch.arange(1.0, 11.0)  # 10% quantile 1.9: nine of ten above
    assert share_above(positive, torch.tensor([0.0, 2.0, 5.0])) == pytest.approx(2 / 3)
    assert share_above(positive, torch.tensor([0.0, 2.0, 5.0]), keep=0.5) == pytest.approx(0.0)  # threshold 5.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc(torch.tensor([]), torch.ones(2)), r"positive must be a non-empty 1-D tensor.*\(0,\)"),
        (lambda: share_above(torch.ones(2), torch.ones(2), keep=1.0), r"keep must lie in \(0, 1\), got 1.0"),
    ],
)
def test_bad_input_is_one_sentence(call, message):
    with pytest.raises(SettingError, match=message):
        call()


def test_a_score_set_of_the_wrong_shape_is_one_sentence_without_jaxtyping_checks(monkeypatch):
    """The suite runs under jaxtyping's import hook, which rejects it first; users' code does not."""
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(SettingError, match=r"negative must be a non-empty 1-D tensor of scores, got shape \(2, 2\)"):
        roc_auc(torch.ones(2), torch.ones(2, 2))


def test_the_script_prints_a_row_and_a_json_line_per_checkpoint(toy_dir, monkeypatch, capsys):
    module = analysis_script("separation")
    monkeypatch.setattr(sys, "argv", ["separation.py", str(toy_dir), "--split", "test"])
    module.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| checkpoint | AUC harmful vs edgy") and lines[2].startswith(f"| {toy_dir} |")
    record = json.loads(lines[-1])
    assert record["split"] == "test" and record["keep"] == 0.9 and record["dtype"] == "torch.float32"
    assert 0.0 <= record["auc_harmful_vs_edgy"] <= 1.0 and record["auc_harmful_vs_harmless"] > 0.5  # the toy refuses
    monkeypatch.setattr(sys, "argv", ["separation.py", str(toy_dir), "--keep", "0"])
    with pytest.raises(SystemExit):
        module.main()
    assert "--keep must lie between 0 and 1, got 0.0." in capsys.readouterr().err
