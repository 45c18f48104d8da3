"""RDO cones on the toy refuser: an orthonormal k-basis in the allowed subspace whose span ablated
removes refusal, the same basis from the same seed, and one-sentence errors for a cone that cannot fit."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, data
from mechrefusal.core.errors import SettingError
from mechrefusal.directions import RDOSettings, rdo_cone
from mechrefusal.directions.rdo_cone import orthonormal
from tests.test_rdo import FAST
from tests.test_toy_refusal import random_like


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MECHREFUSAL_HOME", str(tmp_path_factory.mktemp("cone-home")))
        yield


def cone(toy, dim, k, **options):
    harmful, harmless = data.load("harmful", "train"), data.load("harmless", "train")
    return rdo_cone(toy, harmful, harmless, dim, k, settings=RDOSettings(**FAST), progress=False, **options)


def test_a_cone_is_an_orthonormal_basis_whose_span_removes_refusal(toy, dim):
    other = random_like(dim, 7)
    basis = cone(toy, dim, 3, orthogonal_to=other)
    assert len(basis) == 3 and {(d.layer, d.position, d.method) for d in basis} == {
        (dim.layer, dim.position, "rdo-cone")
    }
    units = basis.matrix / dim.vector.norm()
    assert torch.allclose(units @ units.T, torch.eye(3), atol=1e-5)
    assert (units @ other.unit).abs().max() < 1e-5
    assert len(basis[0].provenance["rdo_cone"]["history"]) == FAST["steps"]
    harmful = data.load("harmful", "val")
    plain = mechrefusal.refusal_score(toy, harmful).mean()
    ablated = mechrefusal.refusal_score(toy, harmful, intervention=Ablate(basis)).mean()
    assert plain > 1.0 and ablated < plain - 2.0
    again = cone(toy, dim, 3, orthogonal_to=other)
    assert torch.equal(again.matrix, basis.matrix)


def test_orthonormal_rows_keep_their_orientation():
    free = torch.tensor([[2.0, 0.0, 0.0], [1.0, -3.0, 0.0]])
    assert torch.allclose(orthonormal(free, None), torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    forbidden = torch.tensor([[0.0], [1.0], [0.0]])  # rows [2, 0, 1] and [1, 0, 1] once y is removed
    expected = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 0.0, 2.0]]) / 5**0.5  # Gram-Schmidt by hand
    assert torch.allclose(orthonormal(free + torch.tensor([0.0, 0.0, 1.0]), forbidden), expected, atol=1e-6)


def test_a_cone_that_cannot_fit_is_one_sentence(toy, dim):
    with pytest.raises(
        SettingError, match=f"A cone of dimension 65 does not fit in this model's width d_model={toy.d_model}"
    ):
        cone(toy, dim, toy.d_model + 1)
    with pytest.raises(SettingError, match="at least 1, got 0"):
        cone(toy, dim, 0)
