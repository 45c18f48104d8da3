"""Settings: flags and TOML files generated from the settings dataclasses, one-line errors, README examples."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import pytest

from mechrefusal.analyze import AnalyzeSettings
from mechrefusal.analyze import main as analyze_main
from mechrefusal.attack import AttackSettings, build_attack
from mechrefusal.attack import main as attack_main
from mechrefusal.core.cli import (
    SettingsParser,
    add_settings_arguments,
    field_doc,
    parse_settings,
    settings_from_dict,
    write_settings,
)
from mechrefusal.core.errors import SettingError
from mechrefusal.directions import DIMSettings, DirectionSet, RDOSettings, SelectionFilters
from mechrefusal.train import search
from mechrefusal.train.__main__ import main as train_main
from mechrefusal.train.settings import SearchSettings, TrainSettings, saved_settings

ROOT = Path(__file__).resolve().parents[1]
JOBS = {
    "mechrefusal.train": (TrainSettings, None),
    "mechrefusal.analyze": (AnalyzeSettings, "model"),
    "mechrefusal.attack": (AttackSettings, "model"),
}


def settings_classes(settings_class: type) -> list[type]:
    """``settings_class`` and every settings group nested in it."""
    nested = [f.default_factory for f in fields(settings_class) if callable(f.default_factory)]
    return [settings_class, *(c for n in nested if is_dataclass(n) for c in settings_classes(n))]


def parse(job: str, argv: list[str]):
    settings_class, positional = JOBS[job]
    parser = SettingsParser(prog=job)
    add_settings_arguments(parser, settings_class, positional=positional)
    return parse_settings(parser, settings_class, argv)


@pytest.mark.parametrize("settings_class", sorted({c for s, _ in JOBS.values() for c in settings_classes(s)}, key=str))
def test_every_setting_has_help_text(settings_class):
    assert [f.name for f in fields(settings_class) if not field_doc(settings_class, f.name)] == []


def readme_commands(job: str) -> list[list[str]]:
    """The arguments of every ``python -m JOB ...`` command in README.md (continuation lines joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = re.findall(rf"-m {re.escape(job)}\b([^\n#`]*)", text)
    return [shlex.split(command) for command in commands if "--help" not in command]


@pytest.mark.parametrize("job", JOBS)
def test_the_readme_examples_parse(job, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the files the examples read (--config, --directions) are made here
    commands = readme_commands(job)
    assert len(commands) >= 3
    for argv in commands:
        if "--config" in argv:
            config = Path(argv[argv.index("--config") + 1])
            config.parent.mkdir(parents=True, exist_ok=True)
            write_settings(JOBS[job][0](), config)
        if "--directions" in argv:
            Path(argv[argv.index("--directions") + 1]).touch()
        assert isinstance(parse(job, argv), JOBS[job][0]), argv


def test_nested_settings_are_flags_with_choices_and_switches():
    settings = parse(
        "mechrefusal.train",
        ["--rdo-lr", "0.05", "--search-n-prompts", "32", "--no-search-fallback", "--max-kl", "0.6", "--resume"],
    )
    assert settings.rdo == RDOSettings(lr=0.05)
    assert settings.search == SearchSettings(n_prompts=32, fallback=False, max_kl=0.6)
    assert settings.resume and settings.lr == TrainSettings().lr


def test_a_settings_file_replays_the_settings_and_flags_override_it(tmp_path):
    settings = TrainSettings(method="refat", lr=3e-5, rdo=RDOSettings(lr=0.5), search=SearchSettings(min_induce=-10.0))
    path = write_settings(settings, tmp_path / "settings.toml")
    assert parse("mechrefusal.train", ["--config", str(path)]) == settings
    overridden = parse("mechrefusal.train", ["--config", str(path), "--rdo-steps", "3", "--lr", "1e-3"])
    assert overridden.rdo == RDOSettings(lr=0.5, steps=3) and overridden.lr == 1e-3 and overridden.method == "refat"
    report = AnalyzeSettings(model="runs/x", n_test=8, dim=DIMSettings(search="screen", full_grid=True))
    assert parse("mechrefusal.analyze", ["--config", str(write_settings(report, tmp_path / "a.toml"))]) == report


def test_the_example_configuration_is_the_command_its_results_were_measured_with():
    flags = (
        "--method fail-closed --rounds 7 --consolidation-rounds 1 --plain-share 0.25 --ablated-utility-share 0.5 "
        "--recovery-share 0.5 --fresh-unconditioned --finder dim --utility-weight 12 --train-layers 10:30 "
        "--max-kl 0.6 --min-induce -10 --public-harmful advbench --public-share 0.33"
    ).split()
    config = ["--config", str(ROOT / "examples" / "fail-closed-adaptive.toml")]
    assert parse("mechrefusal.train", config + ["--seed", "1"]) == parse("mechrefusal.train", flags + ["--seed", "1"])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lrr": 1}, "Unknown setting 'lrr'"),
        ({"rdo": {"lrr": 1}}, "Unknown setting 'rdo.lrr'"),
        ({"lr": "fast"}, "Setting lr takes a float"),
        ({"steps": 2.5}, "Setting steps takes a int"),
        ({"resume": 1}, "Setting resume takes a bool"),
        ({"method": "ppo"}, "Unknown training method .ppo.; choose one of sft, fail-closed"),
        ({"search": 3}, "Setting search is a table"),
    ],
)
def test_bad_settings_values_are_named(values, message):
    with pytest.raises(SettingError, match=message):
        settings_from_dict(TrainSettings, values)


def test_checkpoints_written_before_the_groups_are_read_and_compared():
    old = {key: value for key, value in asdict(TrainSettings()).items() if key not in ("search", "rdo")}
    old.update(max_kl=0.6, min_induce=-10.0)
    flat = saved_settings(old)
    assert flat["search.max_kl"] == 0.6 and flat["search.min_induce"] == -10.0 and flat["rdo.lr"] == RDOSettings().lr
    with pytest.raises(SettingError, match="old_knob"):
        saved_settings({**old, "old_knob": 1})


MAINS = {"mechrefusal.train": train_main, "mechrefusal.analyze": analyze_main, "mechrefusal.attack": attack_main}


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize(
    "argv",
    [
        ["--lr", "abc"],
        ["--method", "nope"],
        ["--finder", "pca"],
        ["--dtype", "float16"],
        ["--config", "missing.toml"],
        ["--config", "bad.toml"],
        ["--rdo-lr", "-1"],
        ["--rdo-independence-penalty", "cubic"],
        ["--bogus"],
    ],
)
def test_every_bad_setting_is_one_line_and_exit_status_2(job, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text("[rdo]\nsteps = 'many'\n")
    with pytest.raises(SystemExit) as stop:
        MAINS[job](argv)
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.startswith(f"python -m {job}: error: ") and error.count("\n") == 1


@pytest.mark.parametrize(
    "job, argv", [("mechrefusal.train", ["--lr", "abc"]), ("mechrefusal.analyze", ["--config", "x"])]
)
def test_the_modules_print_no_traceback(job, argv, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", job, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"python -m {job}: error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("budget", ["cpu", "harmbench"])
def test_the_jobs_dtype_and_attacker_reach_every_attack_with_such_a_field(budget):
    attacks = {name: build_attack(name, budget, dtype="float32") for name in ("gcg", "autodan", "pair", "human")}
    assert {name: getattr(attack, "dtype", None) for name, attack in attacks.items()} == {
        "gcg": "float32",
        "autodan": "float32",
        "pair": "float32",
        "human": None,
    }
    assert all(attack.settings().get("dtype") == getattr(attack, "dtype", None) for attack in attacks.values())
    pair = build_attack("pair", budget, attacker="embedded", dtype="bfloat16")
    assert (pair.attacker, pair.dtype, pair.n_streams) == ("embedded", "bfloat16", 3 if budget == "cpu" else 20)
    assert build_attack("gcg", budget).dtype == "auto"


def test_a_run_the_settings_cannot_describe_is_refused_in_one_line(toy_dir, tmp_path, capsys):
    old = {key: value for key, value in asdict(TrainSettings()).items() if key not in ("search", "rdo")}
    (tmp_path / "round-0").mkdir()
    (tmp_path / "round-0" / "mechrefusal.json").write_text(json.dumps({"round": 0, "settings": {**old, "knob": 1}}))
    with pytest.raises(SystemExit) as stop:
        train_main(["--model", str(toy_dir), "--out", str(tmp_path), "--resume", "--device", "cpu"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1
    assert f"Cannot resume {tmp_path}: The saved settings hold knob" in error


def test_the_dim_group_reaches_the_trainers_search(monkeypatch, tiny_model):
    settings = parse(
        "mechrefusal.train", ["--dim-search", "screen", "--dim-finalists", "3", "--no-dim-exclude-massive"]
    )
    assert settings.dim == DIMSettings(search="screen", finalists=3, exclude_massive=False)
    assert DIMSettings().options()["finalists"] is None  # 0: the search's own default

    offered = {}

    def recording(name, **options):
        offered.update(options, name=name)
        raise RuntimeError("stop before searching")

    monkeypatch.setattr(search, "make_finder", recording)
    with pytest.raises(RuntimeError, match="stop before searching"):
        search.next_direction(
            tiny_model, DirectionSet(), finder="dim", filters=SelectionFilters(), dim_settings=settings.dim
        )
    assert offered["name"] == "dim" and offered["dim_settings"] == settings.dim
