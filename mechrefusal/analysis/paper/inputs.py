"""Readers of the jobs' output directories that the paper's figures are built from, each failing in one
sentence: a training run (``python -m mechrefusal.train --out RUN``), an analysis report
(``python -m mechrefusal.analyze --out DIR``), an attack campaign (``python -m mechrefusal.attack --out DIR``)
and a utility file. Each returns plain JSON-like dicts, so the builders can also take saved numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mechrefusal.core.checkpoint_record import METADATA
from mechrefusal.core.directions import SAVED_FILE, DirectionSet
from mechrefusal.core.errors import CheckpointError, DataError, MissingFileError, SettingError

UTILITY_KEYS = ("tasks", "harmless_compliance", "edgy_compliance")


def _json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"No {what} at {path}.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None


def round_directories(run: str | Path) -> list[Path]:
    """A training run's complete round directories (``round-K`` with its metadata), by round."""
    run = Path(run)
    if not run.is_dir():
        raise MissingFileError(f"No training run directory at {run}.")
    found = {
        int(match.group(1)): path
        for path in run.iterdir()
        if (match := re.fullmatch(r"round-(\d+)", path.name)) and (path / METADATA).is_file()
    }
    if not found:
        raise CheckpointError(f"{run} holds no complete round (round-K/{METADATA}); pass a mechrefusal.train --out.")
    return [found[index] for index in sorted(found)]


def read_rounds(run: str | Path) -> list[dict[str, Any]]:
    """Every complete round's metadata (``mechrefusal.json``: method, settings, metrics, wall time), by round."""
    return [_json(path / METADATA, "round metadata") for path in round_directories(run)]


def read_directions(run: str | Path) -> DirectionSet:
    """The directions of a training run's last round (every direction found so far, in order)."""
    path = round_directories(run)[-1] / SAVED_FILE
    if not path.is_file():
        raise MissingFileError(f"No direction file at {path}.")
    return DirectionSet.load(path)


def read_report(directory: str | Path) -> dict[str, Any]:
    """An analysis report's ``report.json`` (needs at least one analysed model)."""
    report = _json(Path(directory) / "report.json", "analysis report (report.json of mechrefusal.analyze --out)")
    if not report.get("models"):
        raise DataError(f"{directory}/report.json analyses no model; pass a mechrefusal.analyze --out directory.")
    return report


def model_entry(report: dict[str, Any], role: str) -> dict[str, Any]:
    """The entry of the model analysed as ``role`` (``"model"``, or ``"compare"`` for ``--compare``)."""
    for entry in report["models"]:
        if entry["role"] == role:
            return entry
    raise DataError(f"The analysis report has no {role!r} model; rerun mechrefusal.analyze with --compare.")


def read_attacks(directory: str | Path) -> dict[str, Any]:
    """An attack campaign's ``"attacks"`` entry (rates per attack and judge, judges, outcomes)."""
    report = _json(Path(directory) / "report.json", "attack results (report.json of mechrefusal.attack --out)")
    if "attacks" not in report:
        raise DataError(f"{directory}/report.json holds no attack results; pass a mechrefusal.attack --out directory.")
    return report["attacks"]


def attack_prompts(attacks: dict[str, Any]) -> dict[str, list[str]]:
    """``"plain"``: the attacked behaviours' own texts; then each attack's test-case prompts."""
    prompts: dict[str, list[str]] = {"plain": []}
    for outcome in attacks["outcomes"]:
        if outcome["behaviour"]["text"] not in prompts["plain"]:
            prompts["plain"].append(outcome["behaviour"]["text"])
        prompts.setdefault(outcome["attack"], []).extend(case["prompt"] for case in outcome["cases"])
    return prompts


def read_utility(path: str | Path) -> dict[str, Any]:
    """A utility file: ``{"tasks": {name: {"accuracy", "stderr", "n"}}, "skipped": {name: reason},
    "cross_entropy", "kl", "harmless_compliance", "edgy_compliance"}``."""
    utility = _json(Path(path), "utility file")
    missing = [key for key in UTILITY_KEYS if key not in utility]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; pass the utility JSON of one method.")
    return utility


def mean_accuracy(utility: dict[str, Any]) -> float | None:
    """Mean zero-shot accuracy over the measured tasks (``None``: no task measured)."""
    accuracies = [task["accuracy"] for task in utility["tasks"].values()]
    return sum(accuracies) / len(accuracies) if accuracies else None


def named_paths(pairs: list[str], what: str) -> dict[str, Path]:
    """``["NAME=PATH", ...]`` (a script's arguments) as an ordered ``{name: path}``."""
    named = {}
    for pair in pairs:
        name, sign, path = pair.partition("=")
        if not sign or not name or not path:
            raise SettingError(f"Expected NAME=PATH for each {what}, got {pair!r}.")
        named[name] = Path(path)
    return named
