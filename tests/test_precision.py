"""The precision policy: both branches of ``dtype="auto"`` without special hardware, the cached probe,
and the record of what was chosen and why."""

from __future__ import annotations

import json

import pytest
import torch

from mechrefusal.core import precision
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.core.precision import choose_precision
from mechrefusal.measure.metrics import last_token_logprobs
from mechrefusal.models import autocast

CPU = torch.device("cpu")


def test_auto_picks_bf16_on_a_cpu_where_the_probe_finds_it_fast():
    chosen = choose_precision("auto", CPU, cpu_bf16_isa=True, bf16_speedup=4.9)
    assert chosen.dtype == "bfloat16" and chosen.reason == "auto: bf16, bf16 matmul 4.9x fp32 on this CPU"


def test_auto_picks_fp32_where_bf16_is_slow_or_missing():
    slow = choose_precision("auto", CPU, cpu_bf16_isa=True, bf16_speedup=0.0029)
    assert slow.dtype == "float32" and slow.reason == "auto: fp32, bf16 matmul 0.0029x fp32 on this CPU"
    barely = choose_precision("auto", CPU, cpu_bf16_isa=True, bf16_speedup=1.2)  # casts would eat the gain
    assert barely.dtype == "float32"
    no_isa = choose_precision("auto", CPU, cpu_bf16_isa=False)
    assert no_isa.dtype == "float32" and "neither AVX512-BF16 nor AMX" in no_isa.reason


def test_asked_bf16_on_a_slow_cpu_runs_with_a_warning_giving_the_ratio():
    with pytest.warns(UserWarning, match=r"slow, bf16 matmul 0.003x fp32 on this CPU"):
        chosen = choose_precision("bfloat16", CPU, cpu_bf16_isa=True, bf16_speedup=0.003)
    assert chosen.dtype == "bfloat16"


def test_cuda_branches():
    cuda = torch.device("cuda")
    assert choose_precision("auto", cuda, cuda_bf16=True).dtype == "bfloat16"
    assert choose_precision("auto", cuda, cuda_bf16=False).dtype == "float32"
    with pytest.raises(SettingError, match="does not support bf16; pass dtype='auto' or 'float32'"):
        choose_precision("bfloat16", cuda, cuda_bf16=False)
    assert choose_precision("float32", cuda, cuda_bf16=True).reason == "float32 (asked)"


def test_an_unknown_dtype_is_one_sentence_and_a_value_error():
    with pytest.raises(
        SettingError, match=r"Unknown compute dtype 'fp8'; choose one of auto, float32, bfloat16"
    ) as error:
        choose_precision("fp8", CPU)
    assert isinstance(error.value, ValueError) and isinstance(error.value, MechrefusalError)


def test_the_probe_runs_once_per_machine_and_is_cached_on_disk(empty_home, monkeypatch):
    calls = []
    monkeypatch.setattr(
        precision, "_matmul_time", lambda dtype: calls.append(dtype) or (1.0 if dtype == torch.float32 else 4.0)
    )
    precision.bf16_speedup.cache_clear()
    try:
        assert precision.bf16_speedup() == 0.25
        precision.bf16_speedup.cache_clear()  # a new process: only the file remains
        assert precision.bf16_speedup() == 0.25
        assert calls == [torch.float32, torch.bfloat16]
        saved = json.loads((empty_home / "precision" / "bf16-probe.json").read_text())
        (key,) = saved
        assert torch.__version__ in key and saved[key] == 0.25
    finally:
        precision.bf16_speedup.cache_clear()


def test_autocast_auto_runs_what_resolve_chose(tiny_model):
    prompts = ["How do magnets work?", "Write a poem about rain."]
    chosen = precision.resolve("auto", tiny_model.device)
    with autocast(tiny_model, chosen.dtype):
        explicit = last_token_logprobs(tiny_model, prompts)
    with autocast(tiny_model, "auto"):
        auto = last_token_logprobs(tiny_model, prompts)
    torch.testing.assert_close(auto, explicit, atol=0, rtol=0)
