"""Shared helpers for the benchmark scripts: timing, peak memory, and the record printed with each run."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from mechrefusal import data
from mechrefusal.core.precision import hardware, resolve
from mechrefusal.core.provenance import versions
from mechrefusal.train.targets import Example


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls, in seconds (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def require_bf16(why: str) -> None:
    """Exit with ``why`` unless ``auto`` resolves to bf16 on this CPU (benchmarks that compare bf16 paths)."""
    if resolve("auto", "cpu").dtype != "bfloat16":
        sys.exit(f"auto resolves to float32 on this CPU: {why}")


def reset_peak_memory() -> None:
    """Reset this process's peak resident set size (Linux: VmHWM) to its current size."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_memory_mib() -> float:
    """Peak resident set size since the last reset, in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def training_examples(n: int) -> tuple[list[Example], list[Example]]:
    """``n`` harmful train prompts with the team's refusal replies and ``n`` harmless ones with a stock
    answer: a training step's batch for the step benchmarks."""
    replies = data.refusal_replies()
    harmful = [Example(p, replies[i]) for i, p in enumerate(data.load("harmful", "train")[:n])]
    harmless = [
        Example(p, "Here is a short, clear answer to your question with two examples.")
        for p in data.load("harmless", "train")[:n]
    ]
    return harmful, harmless


def record(name: str, config: dict, results: dict, device: str = "cpu") -> str:
    """One JSON line with the benchmark's configuration, results, machine, versions and, when the config
    names a compute ``dtype``, the precision it resolved to and why."""
    line = {"benchmark": name, "config": config, "results": results, "machine": hardware(), "versions": versions()}
    if "dtype" in config:
        line["precision"] = resolve(config["dtype"], device).to_dict()
    return json.dumps(line)
