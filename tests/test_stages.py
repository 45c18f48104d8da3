"""Cached pipeline stages: reuse, redo on changed settings or damaged outputs, resume, --only and --from."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mechrefusal.core.errors import SettingError
from mechrefusal.core.stages import Stage, run_stages


def pipeline(calls: list[str], factor: int = 2, fail_in: str | None = None) -> list[Stage]:
    """Two stages: ``numbers`` writes 0..4 to a file, ``scaled`` multiplies them by ``factor``."""

    def numbers(context):
        calls.append(f"numbers resume={context.resume}")
        (context.directory / "numbers.json").write_text(json.dumps(list(range(5))))
        return {"file": "numbers/numbers.json"}

    def scaled(context):
        calls.append(f"scaled resume={context.resume}")
        if fail_in == "scaled":
            raise KeyboardInterrupt
        values = json.loads((context.directory.parent / context.inputs["numbers"]["file"]).read_text())
        return {"values": [factor * value for value in values]}

    return [Stage("numbers", {}, numbers), Stage("scaled", {"factor": factor}, scaled, needs=("numbers",))]


def test_a_rerun_reuses_every_finished_stage(tmp_path):
    calls: list[str] = []
    first = run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    second = run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    assert [r.status for r in first] == ["done", "done"] and [r.status for r in second] == ["cached", "cached"]
    assert second[1].result == {"values": [0, 2, 4, 6, 8]}
    assert calls == ["numbers resume=False", "scaled resume=False"]


def test_a_changed_setting_redoes_that_stage_and_later_ones_only(tmp_path):
    calls: list[str] = []
    run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    records = run_stages(pipeline(calls, factor=3), tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["cached", "done"]
    assert records[1].result == {"values": [0, 3, 6, 9, 12]}


def test_a_damaged_output_is_recomputed_not_reused(tmp_path):
    calls: list[str] = []
    run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    (tmp_path / "numbers" / "numbers.json").write_text("[7]")
    records = run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["done", "cached"]
    assert json.loads((tmp_path / "numbers" / "numbers.json").read_text()) == [0, 1, 2, 3, 4]
    (tmp_path / "scaled" / "stage.json").write_text("{not json")
    assert [r.status for r in run_stages(pipeline(calls), tmp_path, announce=lambda line: None)] == ["cached", "done"]


def test_a_stage_computed_from_an_earlier_output_of_its_input_is_recomputed(tmp_path):
    """A damaged input recomputed to other files (a retrained checkpoint is not bit-exact) redoes what needs it,
    in the same run or, after ``--only``, in the next."""
    calls: list[str] = []

    def counted(context):
        calls.append("counted")
        (context.directory / "count.json").write_text(json.dumps(len(calls)))
        return {}

    def copied(context):
        return {"count": json.loads((context.directory.parent / "counted" / "count.json").read_text())}

    stages = [Stage("counted", {}, counted), Stage("copied", {}, copied, needs=("counted",))]
    assert run_stages(stages, tmp_path, announce=lambda line: None)[1].result == {"count": 1}
    (tmp_path / "counted" / "count.json").write_text("7")
    records = run_stages(stages, tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["done", "done"] and records[1].result == {"count": 2}  # before: 1, cached
    (tmp_path / "counted" / "count.json").write_text("7")
    assert [r.status for r in run_stages(stages, tmp_path, only="counted", announce=lambda line: None)] == [
        "done",
        "skipped",  # stale now (counted's output is not copied's input), left for the next run
    ]
    records = run_stages(stages, tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["cached", "done"] and records[1].result == {"count": 3}


def test_an_interrupted_stage_resumes_and_finished_ones_are_kept(tmp_path):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(pipeline(calls, fail_in="scaled"), tmp_path, announce=lambda line: None)
    records = run_stages(pipeline(calls), tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["cached", "done"]
    assert calls == ["numbers resume=False", "scaled resume=False", "scaled resume=True"]


def test_only_and_from(tmp_path):
    calls: list[str] = []
    with pytest.raises(SettingError, match="Stage scaled needs numbers, which has no valid cached output"):
        run_stages(pipeline(calls), tmp_path, only="scaled", announce=lambda line: None)
    records = run_stages(pipeline(calls), tmp_path, only="numbers", announce=lambda line: None)
    assert [r.status for r in records] == ["done", "skipped"]
    records = run_stages(pipeline(calls), tmp_path, start="numbers", announce=lambda line: None)
    assert [r.status for r in records] == ["done", "done"]
    with pytest.raises(SettingError, match=r"--from plots: no such stage; the stages are numbers, scaled\."):
        run_stages(pipeline(calls), tmp_path, start="plots", announce=lambda line: None)
    with pytest.raises(SettingError, match=r"--only plots: no such stage"):
        run_stages(pipeline(calls), tmp_path, only="plots", announce=lambda line: None)


def configured(calls: list[str], config: dict, defaults: dict, fail_in: str | None = None) -> list[Stage]:
    """The two stages of `pipeline`, the first with ``config`` and ``defaults``."""
    first, second = pipeline(calls, fail_in=fail_in)
    return [Stage(first.name, config, first.body, defaults=defaults), second]


def test_a_setting_newer_than_a_cached_stage_at_its_default_redoes_nothing(tmp_path):
    calls: list[str] = []
    old = {"steps": 5, "search": {"kl": 0.5}}
    run_stages(configured(calls, old, {}), tmp_path, announce=lambda line: None)
    new = {"steps": 5, "search": {"kl": 0.5, "induce": 0.0}, "share": 0.0}
    defaults = {"steps": 1, "search": {"kl": 0.1, "induce": 0.0}, "share": 0.0}
    records = run_stages(configured(calls, new, defaults), tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["cached", "cached"] and len(calls) == 2
    saved = json.loads((tmp_path / "numbers" / "stage.json").read_text())
    assert saved["key"] == records[0].key and saved["config"] == new and saved["rekeyed_from"] != records[0].key
    again = run_stages(configured(calls, new, defaults), tmp_path, announce=lambda line: None)
    assert [r.status for r in again] == ["cached", "cached"] and len(calls) == 2


def test_an_interrupted_stage_older_than_a_setting_resumes_instead_of_being_cleared(tmp_path):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(configured(calls, {"steps": 5}, {}, fail_in="scaled"), tmp_path, announce=lambda line: None)
    (tmp_path / "scaled" / "partial.json").write_text("[1]")  # what the interrupted stage had done
    records = run_stages(configured(calls, {"steps": 5, "share": 0.0}, {"share": 0.0}), tmp_path, announce=print)
    assert [r.status for r in records] == ["cached", "done"] and calls[-1] == "scaled resume=True"
    assert (tmp_path / "scaled" / "partial.json").exists()


@pytest.mark.parametrize(
    "new",
    [
        {"steps": 5, "search": {"kl": 0.5}, "share": 0.3},  # a newer setting off its default
        {"steps": 5, "search": {"kl": 0.5, "induce": 1.0}},  # the same, nested
        {"steps": 6, "search": {"kl": 0.5}, "share": 0.0},  # an older setting changed
        {"search": {"kl": 0.5}, "share": 0.0},  # a setting gone
        {"steps": 5, "search": {"kl": 0.5}, "other": 0.0},  # a newer setting with no default given
    ],
)
def test_other_differences_still_redo_the_stage_and_later_ones(tmp_path, new):
    calls: list[str] = []
    run_stages(configured(calls, {"steps": 5, "search": {"kl": 0.5}}, {}), tmp_path, announce=lambda line: None)
    defaults = {"steps": 1, "search": {"kl": 0.1, "induce": 0.0}, "share": 0.0}
    records = run_stages(configured(calls, new, defaults), tmp_path, announce=lambda line: None)
    assert [r.status for r in records] == ["done", "done"]


def pieces(calls: list[str], attacks: str) -> list[Stage]:
    """One stage that keeps its pieces: a file per attack, made only when missing (the piece's own check)."""

    def attacked(context):
        for name in attacks.split(","):
            piece = context.directory / f"{name}.json"
            if not piece.exists():
                calls.append(name)
                piece.write_text(json.dumps(name))
        return {}

    return [Stage("attacks", {"attacks": attacks}, attacked, keeps_pieces=True)]


def test_a_stage_that_keeps_its_pieces_reuses_them_under_a_new_key(tmp_path):
    calls: list[str] = []
    lines: list[str] = []
    run_stages(pieces(calls, "human,gcg"), tmp_path, announce=lambda line: None)
    records = run_stages(pieces(calls, "human,gcg,cone"), tmp_path, announce=lines.append)
    assert [r.status for r in records] == ["done"] and calls == ["human", "gcg", "cone"]
    assert lines == ["stage attacks: running, reusing the pieces still valid ()"]


def test_a_stage_that_keeps_its_pieces_is_still_cleared_when_damaged_or_forced(tmp_path):
    calls: list[str] = []
    run_stages(pieces(calls, "human"), tmp_path, announce=lambda line: None)
    (tmp_path / "attacks" / "human.json").write_text('"edited"')
    run_stages(pieces(calls, "human,gcg"), tmp_path, announce=lambda line: None)
    assert calls == ["human", "human", "gcg"]
    assert json.loads((tmp_path / "attacks" / "human.json").read_text()) == "human"
    run_stages(pieces(calls, "human,gcg"), tmp_path, start="attacks", announce=lambda line: None)
    assert calls == ["human", "human", "gcg", "human", "gcg"]


def test_an_ordinary_stage_is_cleared_under_a_new_key(tmp_path):
    calls: list[str] = []
    first = pieces(calls, "human")[0]
    run_stages([replace(first, keeps_pieces=False)], tmp_path, announce=lambda line: None)
    run_stages([replace(pieces(calls, "human,gcg")[0], keeps_pieces=False)], tmp_path, announce=lambda line: None)
    assert calls == ["human", "human", "gcg"]
