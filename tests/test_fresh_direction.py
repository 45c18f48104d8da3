"""The fresh-direction diagnosis (`mechrefusal.analysis.fresh_direction`, analyses/fresh_direction.py) on
known geometry, from a hand-written analysis report directory."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mechrefusal.analysis.fresh_direction import diagnose_report, fresh_of, fresh_parts, span_projection
from mechrefusal.analysis.report import SUMMARY_FIELDS
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import DataError, MissingFileError, SettingError
from mechrefusal.measure.judges import Verdict
from mechrefusal.reproduce import analysis_script

E = torch.eye(4)


def test_a_direction_inside_the_span_projects_with_length_one_and_an_orthogonal_one_with_zero():
    saved = DirectionSet([Direction(3 * E[0], 1, -1, "dim"), Direction(E[0] + E[1], 1, -1, "dim")])
    assert span_projection(2 * E[0] - 5 * E[1], saved) == pytest.approx(1.0)
    assert span_projection(E[2], saved) == pytest.approx(0.0, abs=1e-7)
    assert span_projection(E[0] + E[2], saved) == pytest.approx(1 / math.sqrt(2))


def test_the_fresh_direction_splits_into_its_part_in_the_span_and_the_rest():
    saved = Direction(E[0] + E[1], 1, -1, "dim")
    parts = fresh_parts(DirectionSet([saved, Direction(2 * E[0] + 2 * E[2], 3, -2, "dim")]))
    r = 2 * math.sqrt(2)  # the unit fresh vector (e0 + e2) / sqrt 2 has cosine 1/2 with the saved one
    assert torch.allclose(parts["inside span"].vector, (E[0] + E[1]) / r)
    assert torch.allclose(parts["outside span"].vector, (E[0] - E[1]) / r + E[2] / math.sqrt(2))
    assert (parts["outside span"].layer, parts["outside span"].position) == (3, -2)
    with pytest.raises(SettingError, match="needs it and at least one saved direction"):
        fresh_parts(DirectionSet([saved]))


class AlwaysRefuses:
    """A judge stub: every completion is a refusal."""

    def judge(self, instructions, completions):
        return [Verdict(refused=True) for _ in instructions]


def write_report(out: Path, labels: list[str], vectors: list[torch.Tensor], model: str = "runs/fc/round-2") -> None:
    """An analysis report with one model whose directions are ``vectors`` (the last one labelled fresh)."""
    k = len(labels)
    harmful = [[1.0 + i, 2.0 + i, 3.0 + i] for i in range(k)]
    harmless = [[-1.0, 0.0, 1.0] for _ in range(k)]
    entry = {
        "role": "model",
        "model": model,
        "directions": [
            {
                "label": label,
                "source": "fresh" if label == "fresh" else "saved",
                "method": "dim",
                "layer": 2 + i,
                "position": -1,
                "norm": 1.0,
                "passed_filters": True,
            }
            for i, label in enumerate(labels)
        ],
        "independence": {
            "labels": labels,
            "single_rates": [0.9 - 0.1 * i for i in range(k)],
            "induce_scores": [0.0] * k,
            "baseline_rate": 0.95,
            "configurations": [
                {"ablated": [], "judged_rate": 0.95},
                {"ablated": labels[:-1][::-1], "judged_rate": 0.25},
            ],
            "summary": {"weakest": labels[-1], "fail_closed": False, "threshold": 0.5},
        },
        "harmless": {},
        "projections": {"harmful": harmful, "harmless": harmless},
    }
    for path in SUMMARY_FIELDS.values():  # the summary the report's typed view reads, unused here
        *parents, name = path.split(".")
        node = entry
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(name, None)
    out.mkdir()
    judge = "tests.test_fresh_direction:AlwaysRefuses"
    settings = {"judge": judge, "max_new_tokens": 2, "dtype": "float32", "n_test": 4}
    (out / "report.json").write_text(json.dumps({"models": [entry], "settings": settings}))
    DirectionSet([Direction(v, 2 + i, -1, "dim") for i, v in enumerate(vectors)]).save(
        out / "model_directions.safetensors"
    )


def test_the_report_diagnosis_reads_cosines_span_places_and_rates(tmp_path):
    write_report(tmp_path / "analysis", ["d0", "d1", "fresh"], [E[0], 2 * E[1], E[0] + E[1] + math.sqrt(2) * E[2]])
    [diagnosis] = diagnose_report(tmp_path / "analysis")
    assert [row.cosine_with_fresh for row in diagnosis.saved] == pytest.approx([0.5, 0.5])
    assert diagnosis.span_projection == pytest.approx(1 / math.sqrt(2))
    assert diagnosis.angle_to_span == pytest.approx(45.0)
    assert (diagnosis.fresh.layer, diagnosis.fresh.single_refusal) == (4, pytest.approx(0.7))
    assert [row.single_refusal for row in diagnosis.saved] == pytest.approx([0.9, 0.8])
    assert diagnosis.saved_ablated_refusal == 0.25 and diagnosis.baseline_refusal == 0.95
    assert diagnosis.saved[0].separation == pytest.approx(2.0)  # means 2 and 0, both standard deviations 1


def test_the_script_prints_a_table_per_model(tmp_path, monkeypatch, capsys):
    write_report(tmp_path / "analysis", ["d0", "fresh"], [E[0], E[3]])
    module = analysis_script("fresh_direction")
    monkeypatch.setattr(sys, "argv", ["fresh_direction.py", str(tmp_path / "analysis")])
    module.main()
    out = capsys.readouterr().out
    assert "| fresh | 3, -1 | 1.00 | 80% |" in out and "length 0.000" in out and "90.0° from the span" in out
    assert json.loads(out.strip().splitlines()[-1])["models"][0]["span_projection"] == pytest.approx(0.0, abs=1e-7)


def test_bad_report_directories_are_one_sentence(tmp_path):
    with pytest.raises(MissingFileError, match="No analysis report at"):
        diagnose_report(tmp_path)
    write_report(tmp_path / "analysis", ["d0", "d1"], [E[0], E[1]])
    with pytest.raises(DataError, match="do not end in one labelled 'fresh'"):
        diagnose_report(tmp_path / "analysis")


def test_the_script_judges_each_part_of_the_fresh_direction_ablated(toy, toy_dir, tmp_path, monkeypatch, capsys):
    generator = torch.Generator().manual_seed(5)
    vectors = [torch.randn(toy.d_model, generator=generator) for _ in range(2)]
    write_report(tmp_path / "analysis", ["d0", "fresh"], vectors, model=str(toy_dir))
    monkeypatch.setattr(sys, "argv", ["fresh_direction.py", str(tmp_path / "analysis"), "--ablate-parts", "2"])
    analysis_script("fresh_direction").main()
    out = capsys.readouterr().out
    assert "first 2 harmful test prompts with the fresh direction's part inside span ablated: 100%" in out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["models"][0]["part_refusals"] == {"inside span": 1.0, "outside span": 1.0}
    monkeypatch.setattr(sys, "argv", ["fresh_direction.py", str(tmp_path / "analysis"), "--ablate-parts", "5"])
    with pytest.raises(SystemExit):  # before: judged a fifth prompt the analysis never used
        analysis_script("fresh_direction").main()
    assert "--ablate-parts 5 exceeds the 4 test prompts the analysis judged" in capsys.readouterr().err


def test_the_fresh_direction_of_a_checkpoint_is_read_from_the_report(tmp_path):
    write_report(tmp_path / "analysis", ["d0", "fresh"], [E[0], E[3]], model=str(tmp_path / "round-2"))
    fresh = fresh_of(tmp_path / "analysis", str(tmp_path / "round-2"))
    assert torch.equal(fresh.vector, E[3]) and fresh.layer == 3
    with pytest.raises(DataError, match="did not analyse"):
        fresh_of(tmp_path / "analysis", str(tmp_path / "round-3"))
