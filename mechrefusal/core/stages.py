"""Cached pipeline stages: each stage writes into its own directory and is redone only when its inputs
changed or its outputs were damaged.

A stage's key is a hash of its configuration and of the keys of the stages it needs, so changing a setting
redoes that stage and everything downstream, nothing else. When a stage finishes, ``stage.json`` records
its key, its result (a small JSON dict), its wall time and a digest of every file it wrote. A later run
reuses the stage when the key matches and the files still hash to that digest; a damaged or edited output
is recomputed, never silently reused, and so is every stage computed from other outputs of the stages it
needs than theirs now (``stage.json`` records their digests). A setting newer than a cached stage does not
redo it while it is at its default (``Stage.defaults``): the stage's recorded configuration must still hash
to its recorded key with the keys its inputs had then, and it is then re-keyed (``rekeyed_from``), as the
trainer counts a setting a checkpoint predates as its default. A stage that was interrupted leaves
``stage.json`` with ``finished`` false, its key and its inputs' digests: a rerun with the same key and inputs
is told to resume (the trainer continues from its last complete round), otherwise the directory is cleared
first, unless the stage keeps its pieces (``Stage.keeps_pieces``: each file carries its own key, as the attack
campaigns' case files do) and they are not known to be damaged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechrefusal.core.cache import atomic_write_bytes
from mechrefusal.core.errors import SettingError

STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class StageContext:
    """What a stage's body gets: its directory, whether to resume, and the results of the stages it needs."""

    directory: Path
    resume: bool
    inputs: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: ``body(context)`` writes into ``context.directory`` and returns its result."""

    name: str
    config: dict[str, Any]
    """Everything that decides the stage's output (JSON-ready); part of its key."""
    body: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...] = ()
    describe: str = ""
    """One line for the final summary: what the stage makes."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """``config``'s settings at their defaults (nested like it): a cached stage whose recorded configuration
    lacks some of them (it predates them) is reused while they are at these values."""
    keeps_pieces: bool = False
    """The body checks every file it finds in its directory against that file's own key and redoes only the
    stale ones, so a stage redone for another key keeps its directory: an attack added to a campaign does not
    throw away hours of cached test cases. Damaged outputs and ``--from`` still clear it."""


@dataclass
class StageRecord:
    """How a stage ended in this run: ``status`` is ``"done"`` (computed now), ``"cached"`` or ``"skipped"``."""

    name: str
    status: str
    key: str
    result: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    why: str = ""


def stage_key(stage: Stage, upstream: dict[str, str], config: dict[str, Any] | None = None) -> str:
    """A hash of the stage's name and configuration (or ``config``) and of the keys of the stages it needs."""
    chosen = stage.config if config is None else config
    payload = {"name": stage.name, "config": chosen, "needs": {name: upstream[name] for name in stage.needs}}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:24]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def output_digest(directory: Path) -> str:
    """A hash of every file under ``directory`` but ``stage.json`` (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != STAGE_FILE):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def run_stages(
    stages: Sequence[Stage],
    out: str | Path,
    *,
    only: str | None = None,
    start: str | None = None,
    announce: Callable[[str], None] = print,
) -> list[StageRecord]:
    """Run the stages in order under ``out/<stage name>/``, reusing valid cached ones; ``only`` runs one stage
    (its inputs must be cached), ``start`` recomputes that stage and every later one."""
    names = [stage.name for stage in stages]
    for flag, name in (("--only", only), ("--from", start)):
        if name is not None and name not in names:
            raise SettingError(f"{flag} {name}: no such stage; the stages are {', '.join(names)}.")
    forced = set(names[names.index(start) :]) if start else set()
    keys: dict[str, str] = {}
    recorded: dict[str, str] = {}  # each stage's key as its cached outputs record it (a re-keyed one's old key)
    digests: dict[str, str] = {}  # each valid or computed stage's output digest
    results: dict[str, dict[str, Any]] = {}
    records = []
    for stage in stages:
        key = keys[stage.name] = recorded[stage.name] = stage_key(stage, keys)
        directory = Path(out) / stage.name
        saved = _read(directory)
        if saved.get("key") != key and _predates(stage, saved, recorded):
            recorded[stage.name] = saved["key"]
            saved = {**saved, "key": key, "config": stage.config, "rekeyed_from": saved["key"]}
            _write(directory, saved)
        inputs = {name: digests.get(name) for name in stage.needs}
        valid = _valid(saved, key, directory) and _same_inputs(saved, inputs) and stage.name not in forced
        if only is not None and stage.name != only:
            if not valid:
                records.append(StageRecord(stage.name, "skipped", key, why="not asked for (--only)"))
                continue
        elif not valid:
            missing = [name for name in stage.needs if name not in results]
            if missing:
                raise SettingError(
                    f"Stage {stage.name} needs {', '.join(missing)}, which has no valid cached output in {out}; "
                    f"run without --only first."
                )
            keep = stage.keeps_pieces and stage.name not in forced and not _damaged(saved, directory)
            records.append(_compute(stage, key, directory, saved, inputs, results, announce, keep=keep))
            results[stage.name] = records[-1].result
            digests[stage.name] = _read(directory)["digest"]
            continue
        results[stage.name] = saved["result"]
        digests[stage.name] = saved["digest"]
        records.append(StageRecord(stage.name, "cached", key, saved["result"], saved.get("seconds", 0.0)))
    return records


def _compute(
    stage: Stage,
    key: str,
    directory: Path,
    saved: dict[str, Any],
    inputs: dict[str, str | None],
    results: dict[str, dict[str, Any]],
    announce: Callable[[str], None],
    *,
    keep: bool = False,
) -> StageRecord:
    resume = saved.get("key") == key and not saved.get("finished", False) and _same_inputs(saved, inputs)
    if not resume and not keep and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory, {"key": key, "finished": False, "config": stage.config, "inputs": inputs})
    kept = keep and any(path.name != STAGE_FILE for path in directory.iterdir())
    doing = "resuming" if resume else "running, reusing the pieces still valid" if kept else "running"
    announce(f"stage {stage.name}: {doing} ({stage.describe})")
    started = time.perf_counter()
    result = stage.body(StageContext(directory, resume, {name: results[name] for name in stage.needs}))
    seconds = round(time.perf_counter() - started, 1)
    _write(
        directory,
        {
            "key": key,
            "finished": True,
            "config": stage.config,
            "inputs": inputs,
            "result": result,
            "seconds": seconds,
            "digest": output_digest(directory),
        },
    )
    return StageRecord(stage.name, "done", key, result, seconds)


def _read(directory: Path) -> dict[str, Any]:
    try:
        saved = json.loads((directory / STAGE_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _valid(saved: dict[str, Any], key: str, directory: Path) -> bool:
    return (
        saved.get("key") == key
        and saved.get("finished") is True
        and "result" in saved
        and saved.get("digest") == output_digest(directory)
    )


def _damaged(saved: dict[str, Any], directory: Path) -> bool:
    """Whether the stage finished and its files no longer hash to the digest it recorded then."""
    return saved.get("finished") is True and saved.get("digest") != output_digest(directory)


def _same_inputs(saved: dict[str, Any], inputs: dict[str, str | None]) -> bool:
    """Whether the cached stage was computed from the outputs its inputs have now (a stage recorded before
    input digests were kept counts as such)."""
    return saved.get("inputs", inputs) == inputs


def _predates(stage: Stage, saved: dict[str, Any], recorded: dict[str, str]) -> bool:
    """Whether the cached stage, finished or interrupted, differs from ``stage`` only by settings newer than
    it, at their defaults: its recorded configuration hashes to its recorded key with its inputs' recorded
    keys, and ``stage.config`` is that configuration plus such settings (its outputs are checked after; an
    interrupted one then resumes instead of being cleared)."""
    config = saved.get("config")
    return (
        isinstance(config, dict)
        and stage_key(stage, recorded, config) == saved.get("key")
        and _extends(stage.config, config, stage.defaults)
    )


def _extends(new: Any, old: Any, defaults: Any) -> bool:
    """Whether ``new`` is ``old`` with, at any depth of nested dicts, added keys at their ``defaults``."""
    if not (isinstance(new, dict) and isinstance(old, dict)):
        return _canonical(new) == _canonical(old)
    defaults = defaults if isinstance(defaults, dict) else {}
    if set(old) - set(new):
        return False
    return all(
        _extends(value, old[name], defaults.get(name))
        if name in old
        else name in defaults and _canonical(value) == _canonical(defaults[name])
        for name, value in new.items()
    )


def _write(directory: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(directory / STAGE_FILE, json.dumps(payload, indent=1, default=str).encode())
