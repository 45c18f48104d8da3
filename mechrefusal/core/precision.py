"""The compute dtype of the heavy paths (sweeps, generation, training), chosen by the machine.

``dtype="auto"`` (every default) means bf16 autocast only where bf16 matrix products are natively fast:
a CUDA device that supports bf16, or a CPU whose ISA has AVX512-BF16 or AMX *and* on which a short
micro-benchmark confirms it; float32 everywhere else. The reason matters: on a 2-core AVX2-only EPYC a
bf16 matmul ran 350x slower than fp32 and a quick-start job crawled; on this project's AVX512-BF16 EPYC
it runs about 5x faster (``bf16_speedup``, cached under ``$MECHREFUSAL_HOME`` per CPU and torch build).
The means that define directions and the parity tests stay in fp32.

Under autocast the bridge's attention gives NaN rows for left-padding query positions (every key is
masked), and ``0 * NaN`` then leaks them into real tokens one layer later. `autocast` therefore also
zeroes NaN in the attention patterns while it is active: padding positions attend to nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from functools import cache

import torch

from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.core.errors import SettingError
from mechrefusal.core.memory import freed_memory_kept

DTYPES = ("auto", "float32", "bfloat16")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FAST_ENOUGH = 1.5
"""bf16 matmul speed-up over fp32 above which ``auto`` picks bf16 on a CPU. Autocast's casts cost
something, so a bare matmul gain below this barely shows in a model (measured here: a 4.9x matmul
speed-up gave 1.5x on the embedded model's sweep)."""
_PROBE_SIZE = 512


@dataclass(frozen=True)
class Precision:
    """A resolved compute dtype (``"float32"`` or ``"bfloat16"``) and why it was chosen."""

    dtype: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is a known compute dtype, else raise one clear sentence."""
    if dtype not in DTYPES:
        raise SettingError(
            f"Unknown compute dtype {dtype!r}; choose one of {', '.join(DTYPES)} "
            "('auto' picks bfloat16 only where it is fast on this machine)."
        )
    return dtype


def choose_precision(
    requested: str,
    device: torch.device,
    *,
    cuda_bf16: bool = False,
    cpu_bf16_isa: bool = False,
    bf16_speedup: float | None = None,
) -> Precision:
    """The policy, free of measurement: what ``requested`` means on ``device`` given the probes' answers.

    ``bf16_speedup`` is fp32 time ÷ bf16 time of the CPU micro-benchmark (None: not measured).
    """
    check_dtype(requested)
    device = torch.device(device)
    if requested == "float32":
        return Precision("float32", "float32 (asked)")
    if device.type == "cuda":
        if cuda_bf16:
            return Precision("bfloat16", f"{requested}: bf16, the CUDA device supports it")
        if requested == "bfloat16":
            raise SettingError(
                "bfloat16 was asked, but this CUDA device does not support bf16; pass dtype='auto' or 'float32'."
            )
        return Precision("float32", "auto: fp32, the CUDA device lacks bf16")
    if device.type != "cpu":
        return (
            Precision("bfloat16", f"{requested}: bf16 on {device.type}")
            if requested == "bfloat16"
            else Precision("float32", f"auto: fp32 on {device.type}")
        )
    measured = "" if bf16_speedup is None else f", bf16 matmul {bf16_speedup:.3g}x fp32 on this CPU"
    fast = cpu_bf16_isa and bf16_speedup is not None and bf16_speedup >= FAST_ENOUGH
    if requested == "bfloat16":
        if not fast:
            warnings.warn(
                f"bfloat16 was asked on a CPU where it is slow{measured or ' (no AVX512-BF16 or AMX)'}; "
                "it will run, but dtype='auto' would pick float32 here.",
                stacklevel=4,
            )
        return Precision("bfloat16", f"bfloat16 (asked{measured})")
    if not cpu_bf16_isa:
        return Precision("float32", "auto: fp32, the CPU has neither AVX512-BF16 nor AMX")
    return Precision("bfloat16" if fast else "float32", f"auto: {'bf16' if fast else 'fp32'}{measured}")


def resolve(dtype: str, device: torch.device | str) -> Precision:
    """`choose_precision` with this machine's answers (the CPU probe runs once, then is cached)."""
    return _resolve(check_dtype(dtype), torch.device(device))


@cache
def _resolve(dtype: str, device: torch.device) -> Precision:  # cached: a slow-bf16 warning is given once
    if dtype == "float32":
        return choose_precision(dtype, device)
    if device.type == "cuda":
        with torch.cuda.device(device):  # native bf16 only (Ampere on); emulated bf16 on a T4 or V100 is slow
            return choose_precision(dtype, device, cuda_bf16=torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu":
        return choose_precision(dtype, device)
    isa = cpu_has_bf16_isa()
    return choose_precision(dtype, device, cpu_bf16_isa=isa, bf16_speedup=bf16_speedup() if isa else None)


def cpu_has_bf16_isa() -> bool:
    """Whether the CPU advertises AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo`` flags)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def hardware() -> dict[str, object]:
    """The CPU, its ISA as torch uses it, threads, whether freed memory is kept (`keep_freed_memory`) and
    the CUDA device: recorded beside every timing."""
    return {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_isa": cpu_has_bf16_isa(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "keeps_freed_memory": freed_memory_kept(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


@cache
def bf16_speedup() -> float:
    """fp32 ÷ bf16 time of a 512³ matmul on this CPU (0.05 s here, 3 s on the slowest CPU seen), cached on
    disk by CPU model,
    ISA settings and torch version, so the probe runs once per machine and build."""
    key = "|".join(
        [
            _cpu_model(),
            torch.__version__,
            torch.backends.cpu.get_cpu_capability(),
            os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            str(torch.get_num_threads()),
        ]
    )
    path = home() / "precision" / "bf16-probe.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = round(_matmul_time(torch.float32) / _matmul_time(torch.bfloat16), 4)
        atomic_write_bytes(path, json.dumps(known, indent=1).encode())
    return known[key]


def _matmul_time(dtype: torch.dtype) -> float:
    """Best time of a 512³ matmul after a warm-up. Smaller products mislead: with oneDNN held to AVX2,
    bf16 ran at 0.9x fp32 speed at 320³ but 0.14x at 512³ and 0.06x at the embedded model's MLP shape.
    A warm-up ten times slower than expected is timed once more, not three times (0.3 GFLOP at the
    slowest bf16 seen, 0.2 GFLOP/s, costs 1.3 s per call, once per machine)."""
    a, b = torch.randn(_PROBE_SIZE, _PROBE_SIZE, dtype=dtype), torch.randn(_PROBE_SIZE, _PROBE_SIZE, dtype=dtype)
    start = time.perf_counter()
    a @ b
    warm_up = time.perf_counter() - start
    times = []
    for _ in range(1 if warm_up > 0.1 else 3):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return max(min(times), 1e-9)


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
