"""The re-search attack on the toy refuser: its first search finds the toy's DIM direction, the refusal
score falls as more found directions are ablated, the search runs once per model and settings, and the
test cases rebuild their ablation from their info."""

from __future__ import annotations

import json

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, DirectionSet, data
from mechrefusal.attacks import ATTACKS
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.found import attacker_filters
from mechrefusal.attacks.research import ReSearch, research_curve
from mechrefusal.core.directions import Direction
from mechrefusal.core.errors import SettingError
from mechrefusal.directions import SelectionFilters
from tests.test_toy_refusal import TOY_FILTERS, random_like

TOY = dict(max_kl=TOY_FILTERS.max_kl, n_val=16)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """A cache of this module's own: the searches are kept on disk, and one stored by an earlier run (of older
    code, on the same toy weights) would otherwise answer for the search under test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MECHREFUSAL_HOME", str(tmp_path_factory.mktemp("research-attack-home")))
        yield


@pytest.fixture
def checkpoint(toy, dim, monkeypatch):
    """The toy with one saved direction that does not mediate its refusal (a random one)."""
    monkeypatch.setattr(toy, "directions", DirectionSet([random_like(dim, 5)]))
    return toy


def test_the_first_search_on_a_plain_model_finds_its_dim_direction(toy, dim):
    [found] = ReSearch(m=1, **TOY).search(toy)
    assert (found.layer, found.position) == (dim.layer, dim.position)
    assert torch.equal(found.vector, dim.vector)


def test_refusal_falls_with_the_number_of_found_directions_ablated(checkpoint):
    attack = ReSearch(m=2, **TOY)
    found = attack.search(checkpoint)
    assert found[1].vector @ found[0].vector == pytest.approx(0, abs=1e-4)  # searched in the complement
    assert [d.vector for d in attack.search(checkpoint)] == [d.vector for d in found]  # once per model and settings
    harmful = data.load("harmful", "val")
    saved = list(checkpoint.directions)
    scores = [
        mechrefusal.refusal_score(checkpoint, harmful, intervention=Ablate(saved + found[:k])).mean().item()
        for k in range(3)
    ]
    assert scores[0] > 1.0 and scores[1] < scores[0] - 2.0 and scores[2] <= scores[1] + 0.5
    behaviour = load_behaviours("harmful", 1, split="train")[0]
    cases = ATTACKS.get("research")(**TOY).run(checkpoint, behaviour, seed=3)
    assert [case.info["k"] for case in cases] == [1, 2]
    rebuilt = attack.generation_intervention(checkpoint, cases[1])
    assert torch.allclose(DirectionSet(rebuilt.directions).matrix, DirectionSet(saved + found).matrix)
    curve = research_curve(checkpoint, attack, n=16, max_new_tokens=8)
    assert [row["k"] for row in curve] == [0, 1, 2] and [row["ablated"] for row in curve] == [1, 2, 3]
    assert curve[0]["refusal"] > 0.6 and curve[1]["refusal"] < 0.4
    assert curve[1]["found"]["layer"] == found[0].layer and curve[2]["harmless_kl"] > 0


def test_a_search_is_kept_on_disk_for_a_resumed_campaign(toy, empty_home, monkeypatch):
    from mechrefusal.attacks import found as found_module

    attack = ReSearch(m=1, n_prompts=32, **TOY)
    [first] = attack.search(toy)
    monkeypatch.setattr(found_module, "_FOUND", {})  # a new process, as a resumed campaign is
    monkeypatch.setattr(ReSearch, "_search", lambda *args: pytest.fail("searched again"))
    [again] = attack.search(toy)
    assert torch.equal(again.vector, first.vector)
    assert json.dumps(again.provenance, sort_keys=True) == json.dumps(first.provenance, sort_keys=True)  # NaN scores
    [stored] = (empty_home / "searches").iterdir()
    stored.write_bytes(b"damaged")
    monkeypatch.setattr(found_module, "_FOUND", {})
    monkeypatch.undo()  # the real search again, for the damaged file
    monkeypatch.setenv("MECHREFUSAL_HOME", str(empty_home))
    [remade] = attack.search(toy)
    assert torch.equal(remade.vector, first.vector)


def test_unconditioned_search_ignores_the_saved_directions(checkpoint, dim):
    [found] = ReSearch(m=1, conditioned=False, **TOY).search(checkpoint)
    assert torch.equal(found.vector, dim.vector)


def test_research_plain_searches_the_plain_model_and_has_rows_of_its_own(checkpoint, dim):
    plain, conditioned = ATTACKS.get("research-plain")(m=1, **TOY), ATTACKS.get("research")(m=1, **TOY)
    assert isinstance(plain, ReSearch) and not plain.conditioned and plain.caveat != conditioned.caveat
    assert plain.settings() != conditioned.settings()  # its own cached search and cases
    [found], [orthogonal] = plain.search(checkpoint), conditioned.search(checkpoint)
    assert torch.equal(found.vector, dim.vector)  # the toy's own direction, not orthogonal to the random saved one
    saved = checkpoint.directions[0].unit
    assert abs(float(found.unit @ saved)) > 1e-2 and float(orthogonal.unit @ saved) == pytest.approx(0, abs=1e-4)
    behaviour = load_behaviours("harmful", 1, split="train")[0]
    [case] = plain.run(checkpoint, behaviour)
    rebuilt = plain.generation_intervention(checkpoint, case)
    assert torch.allclose(
        DirectionSet(rebuilt.directions).matrix, DirectionSet([checkpoint.directions[0], found]).matrix
    )
    assert type(plain).preset("harmbench").m == 4 and not type(plain).preset("cpu").conditioned


def test_rdo_refines_the_dim_direction_at_its_layer(toy, dim, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHREFUSAL_HOME", str(tmp_path))  # RDO's targets cache
    [found] = ReSearch(m=1, finder="rdo", **TOY).search(toy)
    assert found.method == "rdo" and (found.layer, found.position) == (dim.layer, dim.position)
    assert found.vector.norm() == pytest.approx(dim.vector.norm().item(), rel=1e-4)
    assert 0.5 < float(found.unit @ dim.unit) < 1.0


def with_filters(direction: Direction, **filters: float) -> Direction:
    return Direction(direction.vector, direction.layer, direction.position, direction.method, {"filters": filters})


def test_without_max_kl_the_attacker_searches_as_loosely_as_the_defender(toy, dim, monkeypatch):
    saved = [
        with_filters(random_like(dim, 5), max_kl=0.3, min_induce=0.0),
        with_filters(random_like(dim, 6), max_kl=1.0, min_induce=-10.0),
    ]
    monkeypatch.setattr(toy, "directions", DirectionSet(saved))
    assert attacker_filters(toy, None) == SelectionFilters(max_kl=1.0, min_induce=-10.0)
    assert attacker_filters(toy, 0.05) == SelectionFilters(max_kl=0.05, min_induce=-10.0)
    [inherited] = ReSearch(m=1, n_val=16).search(toy)
    [loose] = ReSearch(m=1, n_val=16, max_kl=1.0).search(toy)
    [strict] = ReSearch(m=1, n_val=16, max_kl=1e-6).search(toy)
    assert inherited.provenance["filters"]["max_kl"] == 1.0 and strict.provenance["filters"]["max_kl"] == 1e-6
    assert torch.equal(inherited.vector, loose.vector)
    monkeypatch.setattr(toy, "directions", DirectionSet([random_like(dim, 5)]))  # no filters recorded
    assert attacker_filters(toy, None) == SelectionFilters()


def test_bad_input_is_one_sentence():
    with pytest.raises(SettingError, match="m must be at least 1, got 0"):
        ReSearch(m=0)
    with pytest.raises(SettingError, match="n_val must be at least 1, got -2"):
        ReSearch(n_val=-2)
    with pytest.raises(SettingError, match="max_kl must be positive, got 0.0"):
        ReSearch(max_kl=0.0)
    with pytest.raises(SettingError, match="Unknown re-search finder 'pca'"):
        ReSearch(finder="pca")
    with pytest.raises(SettingError, match="Unknown re-search preset"):
        ReSearch.preset("gpu")


def test_presets_and_settings():
    assert ReSearch.preset("cpu") == ReSearch()
    assert ReSearch.preset("harmbench").m == 4
    assert ReSearch(finder="rdo").settings()["finder"] == "rdo" and "caveat" not in ReSearch().settings()
