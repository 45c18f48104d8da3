"""Extension points from outside the package: a finder, a training method and a judge defined here, named
by ``module:Class`` specs, run by the jobs that use them; and the registry itself."""

from __future__ import annotations

import json

import pytest

import mechrefusal
from mechrefusal import Ablate, Direction, DirectionSet, SubstringJudge
from mechrefusal.core.errors import SettingError
from mechrefusal.core.registry import Registry
from mechrefusal.directions import DirectionSearch, SelectionFilters
from mechrefusal.measure.activations import mean_activations
from mechrefusal.measure.judges import Verdict
from mechrefusal.train import SearchSettings, TrainSettings, run
from mechrefusal.train.methods.base import Method
from mechrefusal.train.search import next_direction

HERE = __name__  # "tests.test_extensions": the module the specs below name


class MiddleLayerFinder:
    """Difference in means at one layer's last position, no selection (find_direction scores it)."""

    def __init__(self, *, fraction: float = 0.5) -> None:
        self.fraction = fraction

    def __call__(self, search: DirectionSearch) -> Direction:
        layer = int(search.model.n_layers * self.fraction)
        with search.model.intervene(search.context):
            means = [
                mean_activations(search.model, prompts, layers=[layer], positions=[-1], progress=False).mean[0, 0]
                for prompts in (search.harmful, search.harmless)
            ]
        return Direction((means[0] - means[1]).float(), layer, -1, "middle")


class TwoAblatedRounds(Method):
    """Round 0, then one round with every direction ablated and a search after it; records what it was asked."""

    asked: list[str] = []

    def last_round(self) -> int:
        return 1

    def safety_plan(self, model, directions, *, round_index, generator):
        TwoAblatedRounds.asked.append(f"safety {round_index} {len(directions)}")
        return lambda step, n: [(list(range(n)), Ablate(directions))]

    def searches_after(self, round_index: int) -> bool:
        TwoAblatedRounds.asked.append(f"search {round_index}")
        return True


class RecordingJudge(SubstringJudge):
    """The substring judge, counting the completions it judged."""

    judged: list[int] = []

    def judge(self, instructions, completions):
        RecordingJudge.judged.append(len(completions))
        return super().judge(instructions, completions)


class EverythingRefused:
    """Calls every completion a refusal."""

    def judge(self, instructions, completions):
        return [Verdict(True, "always") for _ in completions]


def test_a_registry_knows_its_names_and_imports_specs():
    things: Registry[type] = Registry("thing", {"lazy": f"{HERE}:EverythingRefused"})
    assert things.register("finder")(MiddleLayerFinder) is MiddleLayerFinder
    assert things.names() == ("lazy", "finder")
    assert things.get("finder") is MiddleLayerFinder and things.get("lazy") is EverythingRefused
    assert things.get(f"{HERE}:RecordingJudge") is RecordingJudge
    with pytest.raises(SettingError, match="Unknown thing 'pca'; choose one of lazy, finder or pass 'module:Class'"):
        things.get("pca")
    with pytest.raises(SettingError, match=f"Cannot import the thing '{HERE}:Missing'"):
        things.get(f"{HERE}:Missing")
    with pytest.raises(SettingError, match="Unknown judge 'gpt'; choose one of substring"):
        TrainSettings(judge="gpt")


def test_find_direction_and_the_trainers_search_run_an_outside_finder(toy):
    prompts = mechrefusal.data.load("harmful", "train")[:8], mechrefusal.data.load("harmless", "train")[:8]
    found = mechrefusal.find_direction(toy, *prompts, method=f"{HERE}:MiddleLayerFinder", n_val=4, progress=False)
    assert found.method == "middle" and found.layer == toy.n_layers // 2
    assert {"bypass", "induce", "kl", "passed_filters", "data_sha256"} <= set(found.provenance)
    with pytest.raises(SettingError, match="independent_of= apply to method='rdo' only"):
        mechrefusal.find_direction(toy, *prompts, method=f"{HERE}:MiddleLayerFinder", independent_of=found)
    searched = next_direction(
        toy, DirectionSet([found]), finder=f"{HERE}:MiddleLayerFinder", filters=SelectionFilters()
    )
    assert searched.method == "middle" and searched.provenance["orthogonal_to"]


def test_the_training_job_runs_an_outside_method_finder_and_judge(toy_dir, tmp_path, empty_home):
    """(An empty cache, so that the judge labels fresh targets.)"""
    TwoAblatedRounds.asked.clear()
    RecordingJudge.judged.clear()
    settings = TrainSettings(
        method=f"{HERE}:TwoAblatedRounds",
        finder=f"{HERE}:MiddleLayerFinder",
        judge=f"{HERE}:RecordingJudge",
        model=str(toy_dir),
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=8,
        n_examples=16,
        max_new_tokens=4,
        dtype="float32",
        search=SearchSettings(max_kl=1e9, min_induce=-1e9),  # every searched direction is accepted
        evals_per_round=1,
        device="cpu",
    )
    written = run(settings, progress=False)
    assert [path.name for path in written] == ["round-0", "round-1"]
    assert TwoAblatedRounds.asked == ["safety 1 1", "search 1"]
    assert RecordingJudge.judged  # the targets were judged by the outside judge
    meta = json.loads((written[-1] / "mechrefusal.json").read_text())
    assert meta["settings"]["judge"] == f"{HERE}:RecordingJudge" and meta["method"] == f"{HERE}:TwoAblatedRounds"
    assert meta["metrics"]["search"]["method"] == "middle"
    assert [d.method for d in mechrefusal.load(written[-1], device="cpu").directions] == ["middle", "middle"]


def test_the_analysis_job_runs_an_outside_judge(toy_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    report = mechrefusal.analyze(
        toy_dir,
        out=tmp_path,
        finder=f"{HERE}:MiddleLayerFinder",
        judge=f"{HERE}:EverythingRefused",
        n_train=8,
        n_val=4,
        n_test=4,
        max_new_tokens=2,
        progress=False,
    )
    entry = report.data["models"][0]
    assert entry["harmless"]["baseline_rate"] == 1.0 and entry["harmless"]["all_ablated_rate"] == 1.0
    assert entry["directions"][-1]["method"] == "middle"
    assert report.data["settings"]["judge"] == f"{HERE}:EverythingRefused"
