"""The cone attack on the toy refuser with a random saved direction: one case whose cone is an orthonormal
basis orthogonal to the saved direction, whose ablation with it removes refusal; bad sizes are one sentence."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Direction, DirectionSet, data
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.cone import ConeAttack
from mechrefusal.core.errors import SettingError
from tests.test_toy_refusal import TOY_FILTERS

SMALL = dict(k=2, n_targets=8, steps=6, max_kl=TOY_FILTERS.max_kl)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MECHREFUSAL_HOME", str(tmp_path_factory.mktemp("cone-attack-home")))
        yield


@pytest.fixture
def checkpoint(toy, monkeypatch):
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(toy, "directions", DirectionSet([Direction(vector, 1, -1, "random")]))
    return toy


def test_the_cone_and_the_saved_direction_ablated_remove_refusal(checkpoint):
    behaviour = load_behaviours("harmful", 1, split="train")[0]
    attack = ConeAttack(**SMALL)
    [case] = attack.run(checkpoint, behaviour)
    assert case.prompt == behaviour.text and case.info["k"] == 2 and case.info["saved"] == 1
    cone = DirectionSet(
        [Direction(torch.tensor(d["vector"]), d["layer"], d["position"], "c") for d in case.info["cone"]]
    )
    units = torch.nn.functional.normalize(cone.matrix, dim=-1)
    assert torch.allclose(units @ units.T, torch.eye(2), atol=1e-5)
    assert (units @ checkpoint.directions[0].unit).abs().max() < 1e-5
    assert attack.search(checkpoint) is attack.search(checkpoint)
    ablation = attack.generation_intervention(checkpoint, case)
    assert len(ablation.directions) == 3
    harmful = data.load("harmful", "val")
    plain = mechrefusal.refusal_score(checkpoint, harmful).mean()
    attacked = mechrefusal.refusal_score(checkpoint, harmful, intervention=ablation).mean()
    assert plain > 1.0 and attacked < plain - 2.0


def test_bad_sizes_are_one_sentence(toy):
    with pytest.raises(SettingError, match="cone attack's k must be at least 1, got 0"):
        ConeAttack(k=0)
    with pytest.raises(SettingError, match="steps must be at least 1, got -1"):
        ConeAttack(steps=-1)
    with pytest.raises(
        SettingError, match=f"A cone of dimension 65 does not fit in this model's width d_model={toy.d_model}"
    ):
        ConeAttack(k=toy.d_model + 1).run(toy, load_behaviours("harmful", 1, split="train")[0])
    with pytest.raises(SettingError, match="Unknown cone-attack preset"):
        ConeAttack.preset("gpu")


def test_presets_and_settings():
    assert ConeAttack.preset("cpu") == ConeAttack() and ConeAttack.preset("harmbench").k == 5
    assert ConeAttack(k=4).settings()["k"] == 4 and "caveat" not in ConeAttack().settings()
