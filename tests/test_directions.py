"""Direction containers: exact save/load, bases, cosines and width checks."""

from __future__ import annotations

import jaxtyping
import pytest
import torch

from mechrefusal import Ablate, ArgumentTypeError, DataError, Direction, DirectionSet, MissingFileError, SettingError
from mechrefusal.directions import as_direction_set


def make_set(d_model: int = 8, k: int = 3) -> DirectionSet:
    torch.manual_seed(0)
    return DirectionSet(
        [
            Direction(
                torch.randn(d_model),
                layer=i,
                position=-1 - i,
                method="dim",
                provenance={"model": "toy", "scores": [[0.5, float(i)]]},
            )
            for i in range(k)
        ]
    )


def test_save_load_round_trip_is_exact(tmp_path):
    directions = make_set()
    directions.save(tmp_path / "d.safetensors")
    loaded = DirectionSet.load(tmp_path / "d.safetensors")
    assert len(loaded) == len(directions)
    for a, b in zip(directions, loaded):
        assert torch.equal(a.vector, b.vector)
        assert (a.layer, a.position, a.method, a.provenance) == (b.layer, b.position, b.method, b.provenance)


def test_basis_is_orthonormal_and_spans_the_set():
    directions = make_set()
    q = directions.basis()
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-6, rtol=0)
    residual = directions.matrix.T - q @ (q.T @ directions.matrix.T)
    assert residual.abs().max() < 1e-5


def test_basis_drops_dependent_directions():
    base = make_set()
    dependent = DirectionSet(list(base) + [Direction(base[0].vector * 2 + base[1].vector, 0, -1, "sum")])
    assert dependent.basis().shape == (8, 3)


def test_cosines_are_symmetric_with_unit_diagonal():
    cosines = make_set().cosines()
    torch.testing.assert_close(cosines, cosines.T)
    torch.testing.assert_close(cosines.diagonal(), torch.ones(3))
    a, b = make_set()[0].vector, make_set()[1].vector
    assert cosines[0, 1].item() == pytest.approx(torch.nn.functional.cosine_similarity(a, b, dim=0).item(), abs=1e-6)


def test_width_mismatch_is_a_clear_error(tmp_path, tiny_model):
    make_set(d_model=8).save(tmp_path / "d.safetensors")
    with pytest.raises(SettingError, match="width 8 but the model has d_model 64"):
        DirectionSet.load(tmp_path / "d.safetensors", d_model=tiny_model.d_model)
    with pytest.raises(SettingError, match="width 8 but the model has d_model 64"):
        with tiny_model.intervene(Ablate(make_set(d_model=8))):
            pass


def test_mixed_widths_and_bad_inputs():
    with pytest.raises(SettingError, match="one width"):
        DirectionSet([Direction(torch.ones(4), 0, -1, "x"), Direction(torch.ones(5), 0, -1, "x")])
    with pytest.raises(ArgumentTypeError, match="Expected a Direction"):
        as_direction_set([])


def test_loading_a_foreign_file_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.ones(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DataError, match="not a mechrefusal direction file"):
        DirectionSet.load(tmp_path / "other.safetensors")
    with pytest.raises(MissingFileError, match="No direction file"):
        DirectionSet.load(tmp_path / "missing.safetensors")


def test_a_single_direction_saves_and_loads_exactly(tmp_path):
    direction = make_set()[1]
    direction.save(tmp_path / "one.safetensors")
    loaded = Direction.load(tmp_path / "one.safetensors")
    assert torch.equal(loaded.vector, direction.vector)
    assert (loaded.layer, loaded.position, loaded.method, loaded.provenance) == (1, -2, "dim", direction.provenance)
    make_set().save(tmp_path / "three.safetensors")
    with pytest.raises(DataError, match="holds 3 directions, not one: read it with DirectionSet.load"):
        Direction.load(tmp_path / "three.safetensors")


def test_a_truncated_file_is_a_clear_error(tmp_path):
    make_set().save(tmp_path / "d.safetensors")
    whole = (tmp_path / "d.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.safetensors is not a mechrefusal direction file"):
        DirectionSet.load(tmp_path / "cut.safetensors")


def test_malformed_directions_and_an_empty_set_are_clear_errors():
    with pytest.raises(SettingError, match="counts blocks from 0, got -1"):
        Direction(torch.ones(4), -1, -1, "x")
    for empty in (DirectionSet().basis, DirectionSet().cosines):
        with pytest.raises(SettingError, match="This DirectionSet is empty"):
            empty()


@pytest.mark.parametrize(("vector", "shape"), [(torch.ones(2, 4), r"\(2, 4\)"), ([1.0, 2.0], "list")])
def test_a_vector_of_the_wrong_shape_is_a_clear_error_without_jaxtyping_checks(vector, shape, monkeypatch):
    """The suite runs under jaxtyping's import hook, which rejects these first; users' code does not."""
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(SettingError, match=f"vector must be a 1-D tensor of width d_model, got {shape}"):
        Direction(vector, 0, -1, "x")
