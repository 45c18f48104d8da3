"""Device settings: ``auto`` and explicit devices, and one sentence for each device a machine lacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mechrefusal
from mechrefusal.core.devices import check_fits, resolve_device
from mechrefusal.core.errors import DeviceError


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "cpu:1", "cuda:x", ""])
def test_an_unknown_device_names_the_choices(bad):
    with pytest.raises(DeviceError, match=rf"Unknown device '{bad}'; pass one of auto, cpu, cuda, cuda:N"):
        resolve_device(bad)


def test_cuda_without_cuda_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        DeviceError, match=r"'cuda:1' was asked for, but this machine has no CUDA device .*pass device='cpu'"
    ):
        resolve_device("cuda:1")


def test_a_cuda_index_past_the_last_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"has 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


def test_a_model_too_large_for_the_device():
    with pytest.raises(DeviceError, match=r"needs about 1024.0 GiB on cpu, which has .* GiB free; pass device_map"):
        check_fits(2**40, torch.device("cpu"), what="The model 'x'")


def test_load_checks_the_device_and_the_size_before_loading(tiny_model, monkeypatch):
    with pytest.raises(DeviceError, match="Unknown device 'gpu'"):
        mechrefusal.load(tiny_model.spec, device="gpu")
    monkeypatch.setattr("mechrefusal.core.devices.free_memory_bytes", lambda device: 1000)
    with pytest.raises(DeviceError, match=r"The model '.*' needs about 0.0 GiB on cpu, which has 0.0 GiB free"):
        mechrefusal.load(tiny_model.spec, device="cpu")


@pytest.mark.parametrize("module", ["mechrefusal.analyze", "mechrefusal.train"])
def test_the_clis_turn_a_bad_device_or_dtype_into_one_line(module):
    for flags, message in (
        (["--device", "tpu"], "Unknown device 'tpu'"),
        (["--dtype", "fp16"], "argument --dtype: invalid choice: 'fp16'"),
    ):
        done = subprocess.run([sys.executable, "-m", module, *flags], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
