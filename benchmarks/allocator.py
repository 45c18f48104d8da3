"""Page faults of PyTorch's CPU allocations: a training step and a greedy generation on the embedded model
under the default allocation, under environment settings that cut the faults and under the package's own
`keep_freed_memory`, side by side, each configuration in a fresh process (torch and glibc read the
environment once, at start-up).

    python benchmarks/allocator.py [--batch 16] [--train-layers 10:20] [--dtype auto] [--repeats 8]

Prints per configuration: seconds per training step (the README configuration's step: safety and utility
losses on one batch, backward, AdamW) and per generation (32 harmful test prompts, 32 new tokens), each the
median of --repeats calls after a warm-up, the minor page faults of each, and the times over the default's.
A minor fault maps one fresh page: glibc returns every allocation above its mmap threshold to the system
when it is freed, so a step's large tensors (the logits over a 49k vocabulary, the MLP activations) fault
in again, 4 KiB at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.core.memory import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_freed_memory  # noqa: E402
from mechrefusal.measure.generation import generate  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402
from mechrefusal.train import TrainSettings  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all, trainable_parameters  # noqa: E402

GLIBC_KEEPS = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
CONFIGURATIONS: dict[str, tuple[dict[str, str], bool]] = {
    "default": ({}, False),
    "huge pages": ({"THP_MEM_ALLOC_ENABLE": "1"}, False),
    "glibc keeps freed memory": (GLIBC_KEEPS, False),
    "huge pages + glibc keeps freed memory": ({"THP_MEM_ALLOC_ENABLE": "1", **GLIBC_KEEPS}, False),
    "keep_freed_memory() (the package's)": ({}, True),
}
"""Environment settings of each configuration (all of these variables are cleared first), and whether the
child calls `mechrefusal.core.memory.keep_freed_memory` (what the package does when it loads a model).
THP_MEM_ALLOC_ENABLE asks PyTorch for 2 MiB pages on allocations of 2 MiB or more; the MALLOC_ ones keep glibc
from handing freed memory back to the system (the mmap threshold at its 32 MiB maximum)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-layers", default="10:20")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=8, help="timed calls per measurement (default: 8)")
    parser.add_argument("--child", choices=("plain", "keep"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    names = {name for env, _ in CONFIGURATIONS.values() for name in env}
    base = {key: value for key, value in os.environ.items() if key not in names}
    flags = [
        *("--batch", str(args.batch), "--train-layers", args.train_layers, "--dtype", args.dtype),
        *("--repeats", str(args.repeats), "--child"),
    ]
    results = {}
    for name, (env, keep) in CONFIGURATIONS.items():
        child = [sys.executable, __file__, *flags, "keep" if keep else "plain"]
        done = subprocess.run(child, env={**base, **env}, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    default = results["default"]
    for name, result in results.items():
        print(
            f"{name:<40} step {result['step_s']:.3f} s ({result['step_faults']:>8} faults, "
            f"{result['step_s'] / default['step_s']:.2f}x default)   generation {result['generation_s']:.2f} s "
            f"({result['generation_faults']:>8} faults, {result['generation_s'] / default['generation_s']:.2f}x)"
        )
    config = vars(args) | {"model": "embedded", "configurations": {k: v[0] for k, v in CONFIGURATIONS.items()}}
    print(common.record("allocator", {k: v for k, v in config.items() if k != "child"}, results))


def measure(args: argparse.Namespace) -> dict[str, float]:
    """This process's step and generation: best seconds of 3 after a warm-up, and minor faults per call."""
    if args.child == "keep":
        keep_freed_memory()
    model, reference = mechrefusal.load(), mechrefusal.load()
    harmful, harmless = common.training_examples(args.batch // 2)
    settings = TrainSettings(batch_size=args.batch, train_layers=args.train_layers, dtype=args.dtype)
    optimizer = torch.optim.AdamW(trainable_parameters(model, settings), lr=1e-6)
    model.hf_model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _loss(model, reference, harmful, harmless, settings, ablate_all(None)(0, args.batch // 2)).backward()
        optimizer.step()

    prompts = data.load("harmful", "test")[:32]

    def generation() -> None:
        with autocast(model, args.dtype):
            generate(model, prompts, max_new_tokens=32)

    step_s, step_faults = timed(step, args.repeats)
    model.hf_model.eval()
    generation_s, generation_faults = timed(generation, args.repeats)
    return {
        "step_s": round(step_s, 3),
        "step_faults": step_faults,
        "generation_s": round(generation_s, 3),
        "generation_faults": generation_faults,
    }


def timed(fn, repeats: int) -> tuple[float, int]:
    """Median wall time of ``repeats`` calls after a warm-up, and the minor page faults of one call (mean).
    The median, not the best: on a busy host the best of a few picks whichever call the host ran fast
    (session 16: steps of 2.2-9.1 s in one process)."""
    fn()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // repeats


if __name__ == "__main__":
    main()
