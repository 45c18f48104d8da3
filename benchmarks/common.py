"""Shared helpers for the benchmark scripts: timing, peak memory, and the record printed with each run."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import mechrefusal
from mechrefusal import data
from mechrefusal.core.memory import keep_freed_memory
from mechrefusal.core.precision import hardware, resolve
from mechrefusal.core.provenance import versions
from mechrefusal.train import TrainSettings
from mechrefusal.train.loop import trainable_parameters
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


def step_arguments(doc: str, repeats: int) -> argparse.Namespace:
    """The training-step benchmarks' flags: --batch, --train-layers, --repeats, --blocks."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-layers", default="10:20")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed steps per block (default: {repeats})")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per way, the ways alternating (default: 3)")
    return parser.parse_args()


@dataclass
class StepSetup:
    """The README configuration's training step on the embedded model: the model with its trainable layers,
    the frozen reference, a batch of stock examples (`training_examples`) and the settings."""

    model: mechrefusal.Model
    reference: mechrefusal.Model
    harmful: list[Example]
    harmless: list[Example]
    settings: TrainSettings
    parameters: list[torch.nn.Parameter]

    def step(self, loss: Callable[[], torch.Tensor]) -> Callable[[], float]:
        """One SGD step of ``loss`` from the same weights each call (restored first), returning the loss."""
        start = [parameter.detach().clone() for parameter in self.parameters]

        def run() -> float:
            with torch.no_grad():
                for parameter, value in zip(self.parameters, start):
                    parameter.copy_(value)
            optimizer = torch.optim.SGD(self.parameters, lr=1e-3)
            value = loss()
            value.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return value.item()

        return run


def step_setup(args: argparse.Namespace) -> StepSetup:
    """`StepSetup` for ``--batch`` and ``--train-layers``, the model in training mode."""
    keep_freed_memory()
    model, reference = mechrefusal.load(), mechrefusal.load()
    reference.bridge.requires_grad_(False)  # as the trainer holds it
    harmful, harmless = training_examples(args.batch // 2)
    settings = TrainSettings(batch_size=args.batch, train_layers=args.train_layers, dtype="auto")
    parameters = trainable_parameters(model, settings)
    model.hf_model.train()
    return StepSetup(model, reference, harmful, harmless, settings, parameters)


def alternating(
    ways: dict[str, Callable[[], float]], blocks: int, repeats: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median seconds of each way's calls and their values: ``blocks`` blocks per way, each a warm-up call
    and ``repeats`` timed ones, the ways alternating block by block so that a host's drift hits all."""
    times: dict[str, list[float]] = {way: [] for way in ways}
    values: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(blocks):
        for way, call in ways.items():
            call()
            for _ in range(repeats):
                started = time.perf_counter()
                values[way].append(call())
                times[way].append(time.perf_counter() - started)
    return {way: statistics.median(seconds) for way, seconds in times.items()}, values
