"""Shared fixtures: a tiny random chat model (fast tier) and the embedded model (slow tier)."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal.core.cache import home
from mechrefusal.models.export import save_hf_directory
from mechrefusal.models.tiny import build_tiny_model
from tests.toy import train_toy_refuser

# Small analysis settings for the toy model; tiny models shift first-token distributions by a few
# tenths of a nat whatever is ablated, hence the looser KL filter.
TOY_ANALYSIS = dict(n_train=64, n_val=16, n_test=24, max_new_tokens=8, max_kl=1.0)


PINNED = ("wheels", "assets")
"""The cache's downloads, pinned by version and hash (the embedded model's wheel, the public sets): shared
with the user's cache. Everything else the toolkit caches (targets, reference answers, the harm classifier,
searches, converted models) is computed from inputs and settings, not from the code, so a test session makes
its own: a result cached by older code never answers for the code under test."""


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory):
    """A ``MECHREFUSAL_HOME`` of the session's own, with the pinned downloads of the user's cache linked in."""
    user, own = home(), tmp_path_factory.mktemp("mechrefusal-home")
    for name in PINNED:
        (user / name).mkdir(exist_ok=True)
        (own / name).symlink_to(user / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MECHREFUSAL_HOME", str(own))
        yield own


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> mechrefusal.Model:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
"""Every device the numeric tests (parity, sweeps, training steps, resume) run on: the CPU in CI, CUDA too
where a GPU exists."""


@pytest.fixture(scope="session", params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_on_device(tiny_model, device) -> mechrefusal.Model:
    """The tiny model on each available device."""
    return tiny_model if device == "cpu" else mechrefusal.load(tiny_model.spec, device=device)


@pytest.fixture(scope="session")
def embedded_model() -> mechrefusal.Model:
    return mechrefusal.load()


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A fresh, empty cache directory for tests that exercise fetching."""
    monkeypatch.setenv("MECHREFUSAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> mechrefusal.Model:
    """A tiny model trained in the session to refuse the harmful set (see tests/toy.py)."""
    return train_toy_refuser(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def toy_dir(toy, tmp_path_factory):
    """The toy refusing model saved as a Hugging Face directory (a spec `load` accepts)."""
    directory = tmp_path_factory.mktemp("toy-saved")
    save_hf_directory(toy, directory)
    return directory


@pytest.fixture(scope="session")
def toy_report(toy, toy_dir, tmp_path_factory):
    """The analysis report of a toy checkpoint (a random saved direction plus a fresh one) compared with
    the plain toy (a fresh one only)."""
    import shutil

    import torch

    checkpoint = tmp_path_factory.mktemp("toy-ckpt") / "round-1"
    shutil.copytree(toy_dir, checkpoint)
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(11))
    mechrefusal.DirectionSet([mechrefusal.Direction(vector, 1, -1, "random")]).save(
        checkpoint / "directions.safetensors"
    )
    out = tmp_path_factory.mktemp("toy-report")
    return mechrefusal.analyze(checkpoint, compare=str(toy_dir), out=str(out), progress=False, **TOY_ANALYSIS)


@pytest.fixture(scope="session")
def dim(toy):
    """The toy's refusal direction by DIM on 64 + 64 train prompts, selected on the val splits (the toy's
    loose KL filter); modules that need another DIM direction define their own ``dim``."""
    from mechrefusal import data
    from mechrefusal.directions import SelectionFilters

    return mechrefusal.find_direction(
        toy,
        data.load("harmful", "train")[:64],
        data.load("harmless", "train")[:64],
        harmful_val=data.load("harmful", "val"),
        harmless_val=data.load("harmless", "val"),
        filters=SelectionFilters(max_kl=1.0),
        progress=False,
    )
