"""The reproduce pipeline on the toy model: every stage runs, a rerun reuses them, --from redoes the tail."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import pytest

from mechrefusal import reproduce
from mechrefusal.analysis import report
from mechrefusal.analyze import AnalyzeSettings
from mechrefusal.measure import judges
from mechrefusal.reproduce import Preset, ReproduceSettings, main, plan, run, story
from mechrefusal.train import reference as train_reference
from mechrefusal.train.settings import SearchSettings
from tests.conftest import TOY_ANALYSIS
from tests.test_campaign import EveryNonRefusalHarmful

TOY_PRESET = Preset(
    rounds=1,
    training={
        "steps": 4,
        "batch_size": 8,
        "lr": 3e-3,
        "train_layers": "all",
        "n_examples": 32,
        "max_new_tokens": 6,
        "search": SearchSettings(max_kl=1.0, min_induce=-5.0),
        "evals_per_round": 1,
    },
    attack={"attacks": "tests.test_campaign:SwapAttack", "n": 2, "max_new_tokens": 6, "judges": "test-harm,substring"},
    adaptive={"attacks": "prefilling,directions", "n": 2, "max_new_tokens": 6, "judges": "test-harm,substring"},
    # the analysis searches with the trainer's filters and prompt count, so the toy's own are left out
    analysis={key: value for key, value in TOY_ANALYSIS.items() if key not in ("max_kl", "n_train")},
    utility={"limit": 3, "max_new_tokens": 4},
)


@pytest.fixture
def toy_preset(monkeypatch):
    monkeypatch.setitem(judges.JUDGES._entries, "test-harm", EveryNonRefusalHarmful)
    monkeypatch.setitem(reproduce.PRESET_PLANS, "quick", TOY_PRESET)


def test_the_pipeline_runs_every_stage_then_reuses_them(toy_preset, toy_dir, tmp_path, monkeypatch):
    settings = ReproduceSettings(model=str(toy_dir), out=str(tmp_path), dtype="float32", device="cpu")
    lines: list[str] = []
    campaigns: list[tuple[str, str]] = []
    attack_run = reproduce.attack_job.run

    def recorded(attack_settings, **kwargs):
        campaigns.append((attack_settings.out.removeprefix(str(tmp_path)), attack_settings.attacks))
        return attack_run(attack_settings, **kwargs)

    monkeypatch.setattr(reproduce.attack_job, "run", recorded)
    first = run(settings, announce=lines.append)
    assert campaigns[2:] == [  # one attack at a time on every checkpoint, then each checkpoint's whole report
        ("/adaptive/round-0", "prefilling"),
        ("/adaptive/fail-closed", "prefilling"),
        ("/adaptive/round-0", "prefilling,directions"),
        ("/adaptive/fail-closed", "prefilling,directions"),
    ], campaigns
    assert [(r.name, r.status) for r in first] == [
        ("round-0", "done"),
        ("fail-closed", "done"),
        ("utility", "done"),
        ("analysis", "done"),
        ("attacks", "done"),
        ("adaptive", "done"),
        ("scoreboard", "done"),
        ("figures", "done"),
    ]
    assert lines[0] == f"reproduce --preset quick: 8 stages into {tmp_path}; compute: cpu, float32 (asked)"
    assert lines[1] == "stage round-0: running (round 0, standard safety fine-tuning)"
    assert train_reference._in_process is None  # the training stages' kept logits dropped after the last one
    assert first[1].result["rounds"] == ["fail-closed/run/round-0", "fail-closed/run/round-1"]
    assert set(first[4].result) == {"round-0", "fail-closed"}
    analysed = tomllib.loads((tmp_path / "analysis" / "settings.toml").read_text())
    assert (analysed["max_kl"], analysed["min_induce"]) == (1.0, -5.0)  # the trainer's filters, not 0.1 and 0
    assert analysed["n_train"] == SearchSettings().n_prompts != AnalyzeSettings().n_train  # and its prompts
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [stage["status"] for stage in summary["stages"]] == ["done"] * 8
    drawn = first[7].result["figures"]
    assert set(first[5].result["fail-closed"]["rates"]) == {"prefilling", "directions", "average"}
    board = (tmp_path / "scoreboard" / "scoreboard.md").read_text()
    assert "## fail-closed" in board and "| directions d0 |" in board and "| prefilling |" in board, board
    assert first[6].result["round-0"]["weakest"] in board
    assert drawn["fail_open"].startswith(str(tmp_path / "attacks" / "round-0")) and drawn["fail_open"].endswith(
        "has no human attack; rerun mechrefusal.attack with --attacks human."
    )
    written = {name for name, why in drawn.items() if why == "written"}
    assert written == {
        "robustness",
        "training_cost",
        "cosines",
        "ablations",
        "independence",
        "attack_projections",
        "rounds",
        "overrefusal_utility",
        "training_curves",
    }, drawn
    assert (tmp_path / "figures" / "robustness.html").is_file() and (tmp_path / "figures" / "README.md").is_file()

    again = run(settings, announce=lines.append)
    assert [r.status for r in again] == ["cached"] * 8 and lines[9:] == lines[:1]  # the header alone
    tail = run(ReproduceSettings(**{**vars(settings), "start": "attacks"}), announce=lines.append)
    assert [r.status for r in tail] == ["cached", "cached", "cached", "cached", "done", "done", "done", "done"]
    with monkeypatch.context() as no_chromium:  # no Chromium: the figures are drawn without PNGs ...
        for module in (reproduce, report):
            no_chromium.setattr(module, "chromium_path", lambda: None)
        without = run(settings, announce=lines.append)
    assert [r.status for r in without] == ["cached"] * 7 + ["done"]
    assert not (tmp_path / "figures" / "robustness.png").exists()
    # ... and drawn again, PNGs included, once one is found (the README's commands install it)
    redrawn = run(settings, announce=lines.append)
    assert [r.status for r in redrawn] == ["cached"] * 7 + ["done"]
    assert (tmp_path / "figures" / "robustness.png").is_file()

    told = story(again, tmp_path)
    assert told[0].startswith("round-0      cached")
    standard = next(line for line in told if line.startswith("standard (round 0): refuses"))
    fail_closed = next(line for line in told if line.startswith("fail-closed: refuses"))
    assert "with the weakest of its 1 saved direction(s) (d0) ablated: " in standard  # the toy's verdict varies
    assert " saved direction(s) (d" in fail_closed
    assert "with a direction found anew ablated; harmless refusal" in fail_closed
    assert told.index(standard) < told.index(fail_closed)
    assert any(line.startswith("attacks on fail-closed: average asr/test-harm") for line in told), told
    assert any(line.startswith("utility of fail-closed: local_commonsense ") for line in told), told
    white_box = next(line for line in told if line.startswith("white-box attacks on fail-closed: "))
    assert white_box.startswith("white-box attacks on fail-closed: ASR (test-harm judge) prefilling ")
    assert ", directions d0 " in white_box and ", directions all " in white_box  # a rate per ablation
    (tmp_path / "scoreboard" / "fail-closed.json").unlink()  # before the scoreboard: pooled, and said so
    pooled = next(line for line in story(again, tmp_path) if line.startswith("white-box attacks on fail-closed: "))
    assert "directions asr/test-harm " in pooled and pooled.endswith("(each attack's variants pooled)")
    assert any(line.startswith("weakest attack on fail-closed: ") and "refusal " in line for line in told), told
    assert any(line.startswith("figures: 9 of 10 in") and "not drawn: fail_open" in line for line in told), told


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "figure-9", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "--only figure-9: no such stage; the stages are round-0," in message
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "file")])
    assert "is a file; pass a directory" in capsys.readouterr().err


def test_training_stages_are_keyed_by_the_bundled_data(monkeypatch):
    from mechrefusal import data
    from mechrefusal.core.stages import _predates, stage_key

    before = plan(ReproduceSettings())[0]
    assert before.name == "round-0" and before.config["data"] == data.digest()
    monkeypatch.setattr(data, "digest", lambda: "other data")
    after = plan(ReproduceSettings())[0]
    assert stage_key(after, {}) != stage_key(before, {})
    recorded = {key: value for key, value in before.config.items() if key != "data"}  # cached before the digest
    assert not _predates(after, {"config": recorded, "key": stage_key(after, {}, recorded)}, {})


def test_only_the_attack_stages_keep_their_cached_cases_under_a_new_key():
    """Each case file carries its own key: the cpu preset's white-box stage, re-keyed when an attack joined,
    threw away hours of embedding-attack cases before (session 22)."""
    for preset in ("quick", "cpu"):
        kept = [stage.name for stage in plan(ReproduceSettings(preset=preset)) if stage.keeps_pieces]
        assert kept == ["attacks", "adaptive"]


def test_the_utility_stage_is_keyed_by_the_local_tasks_files(monkeypatch):
    from mechrefusal import reproduce

    [before] = [stage for stage in plan(ReproduceSettings()) if stage.name == "utility"]
    monkeypatch.setattr(reproduce, "local_tasks_digest", lambda: "an edited answer key")
    [after] = [stage for stage in plan(ReproduceSettings()) if stage.name == "utility"]
    assert before.config["local_tasks"] != after.config["local_tasks"] == "an edited answer key"


def test_the_story_gives_a_verdict_only_on_a_model_that_refuses():
    from mechrefusal.analysis.report import DirectionRow, ModelResult, Summary
    from mechrefusal.reproduce import _ablation_story

    rates = dict.fromkeys(("all_ablated_refusal", "harmless_refusal", "harmless_all_ablated_refusal"), 0.0)
    scores = dict.fromkeys(("harmful_score", "harmful_all_ablated_score", "harmless_score"), 0.0)
    summary = Summary(
        harmful_refusal=0.4,
        weakest_single_refusal=0.55,
        weakest="d0",
        directions_to_break=None,
        breaking_set=None,
        fail_closed=False,
        threshold=0.5,
        kl_all_ablated=0.0,
        harmless_all_ablated_score=0.0,
        **rates,
        **scores,
    )
    saved = DirectionRow("d0", "saved", "dim", 3, -1, 1.0, True, 0.55, None)
    fresh = DirectionRow("fresh", "fresh", "dim", 4, -1, 1.0, True, 0.1, None)
    weak = ModelResult("model", "m", summary, (saved, fresh), {})
    assert _ablation_story(weak).endswith(
        "(d0) ablated: too little refusal (below 50%) to call it fail-closed or "
        "fail-open; 10% with a direction found anew ablated; harmless refusal 0%"
    )
    refusing = replace(weak, summary=replace(summary, harmful_refusal=0.9))  # before: "fail-closed" for both
    assert "(d0) ablated: fail-closed under its saved directions; 10% with a direction found anew" in (
        _ablation_story(refusing)
    )
    broken = replace(refusing, directions=(replace(saved, single_refusal=0.2), fresh))
    assert "20% with the weakest of its 1 saved direction(s) (d0) ablated: fail-open;" in _ablation_story(broken)


def test_a_figure_script_that_fails_unforeseen_is_reported_not_raised(tmp_path):
    from mechrefusal.reproduce import _draw

    (tmp_path / "fig_broken.py").write_text("def main(argv):\n    return {}['round']\n")
    (tmp_path / "fig_refused.py").write_text(
        "import argparse\n\ndef main(argv):\n    argparse.ArgumentParser(prog='fig').error('no such run')\n"
    )
    assert _draw(tmp_path, "broken", []) == "failed: KeyError: 'round'"  # before: the KeyError ended the stage
    assert _draw(tmp_path, "refused", []) == "no such run"


def test_stages_are_keyed_by_the_precision_auto_resolves_to(monkeypatch):
    from mechrefusal import reproduce
    from mechrefusal.core.precision import Precision
    from mechrefusal.core.stages import _predates, stage_key

    monkeypatch.setattr(reproduce, "resolve", lambda dtype, device: Precision("bfloat16", "fast bf16 here"))
    here = plan(ReproduceSettings())
    monkeypatch.setattr(reproduce, "resolve", lambda dtype, device: Precision("float32", "slow bf16 there"))
    there = plan(ReproduceSettings())
    assert {s.config["precision"] for s in here} == {"bfloat16"} and {s.config["precision"] for s in there} == {
        "float32"
    }
    assert stage_key(here[0], {}) != stage_key(there[0], {})  # before: both 'auto', one key
    older = {key: value for key, value in here[0].config.items() if key != "precision"}  # cached before
    assert _predates(here[0], {"config": older, "key": stage_key(here[0], {}, older)}, {})
