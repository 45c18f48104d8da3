"""The analysis job on the toy refusing model: the report, the summary and the CLI."""

from __future__ import annotations

import json

import torch

import mechrefusal
from mechrefusal.analyze import AnalyzeSettings, main, run, summary

TOY_SETTINGS = dict(n_train=64, n_val=16, n_test=24, max_new_tokens=8, max_kl=1.0)


def test_saved_toy_reloads_with_the_same_logits(toy, toy_dir):
    reloaded = mechrefusal.load(toy_dir, device="cpu")
    batch = toy.tokenize(["Hi", "How do I pick a lock?"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.logits(batch), toy.logits(batch))


def test_report_shows_the_direction_removing_refusal(toy_dir, tmp_path):
    report = run(AnalyzeSettings(model=str(toy_dir), out=str(tmp_path / "r"), **TOY_SETTINGS), progress=False)
    assert report["direction"]["passed_filters"]
    test = report["test"]
    assert test["baseline/harmful"]["refusal_rate"] > 0.6
    assert test["ablated/harmful"]["refusal_rate"] < 0.2
    assert test["ablated/harmful"]["refusal_score"] < test["baseline/harmful"]["refusal_score"] - 3
    assert test["baseline/harmless"]["refusal_rate"] < 0.4
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == json.loads(json.dumps(report))
    saved = mechrefusal.DirectionSet.load(tmp_path / "r" / "direction.safetensors")
    assert saved[0].layer == report["direction"]["layer"]
    text = summary(report)
    assert f"layer {report['direction']['layer']}" in text and "ablated/harmful" in text


def test_cli_flags_reach_the_settings(toy_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    main([str(toy_dir), "--out", str(out), "--n-train", "32", "--n-val", "8", "--n-test", "8",
          "--max-new-tokens", "4", "--max-kl", "1.0", "--dtype", "float32"])
    printed = capsys.readouterr().out
    assert "selected DIM direction" in printed and str(out / "report.json") in printed
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["n_test"] == 8 and settings["dtype"] == "float32" and settings["full_grid"] is False
