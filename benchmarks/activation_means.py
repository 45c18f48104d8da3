"""Streaming means: cost against a plain HF forward, and peak memory against the number of prompts.

    python benchmarks/activation_means.py [--n 256] [--batch-size 16]

Prints (targets from the foundation issue):
- time of the means over N prompts / time of a plain HF forward over the same batches (<= 1.0);
- peak memory of the means for N=512 / N=64 (<= 1.1), each measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402


def prompts(n: int) -> list[str]:
    """N bundled prompts spread over the length range of the first 512 (so N=64 keeps the longest)."""
    pool = sorted((data.load("harmful") + data.load("harmless"))[:512], key=len)
    step = max(1, len(pool) // n)
    return pool[step - 1 :: step][:n]


def time_ratio(n: int, batch_size: int) -> dict:
    model = mechrefusal.load()
    instructions = prompts(n)
    batches = [batch for _, batch in model.batches(instructions, batch_size)]

    def plain_forward() -> None:
        with torch.no_grad():
            for batch in batches:
                model.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def means() -> None:
        mechrefusal.mean_activations(model, instructions, batch_size=batch_size, progress=False)

    forward_s, means_s = common.best_time(plain_forward), common.best_time(means)
    return {
        "plain_hf_forward_s": round(forward_s, 3),
        "means_s": round(means_s, 3),
        "means_over_forward": round(means_s / forward_s, 3),
    }


def peak_memory_child(n: int, batch_size: int) -> None:
    """Run in a fresh process: print the peak RSS of computing the means over N prompts."""
    model = mechrefusal.load()
    instructions = prompts(n)
    mechrefusal.mean_activations(model, instructions[:batch_size], batch_size=batch_size, progress=False)
    common.reset_peak_memory()
    before = common.peak_memory_mib()
    mechrefusal.mean_activations(model, instructions, batch_size=batch_size, progress=False)
    print(json.dumps({"peak_mib": common.peak_memory_mib(), "before_mib": before}))


def peak_memory(n: int, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--memory-child", str(n), "--batch-size", str(batch_size)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="prompts for the timing (default 256)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child, args.batch_size)
        return
    timing = time_ratio(args.n, args.batch_size)
    small, large = peak_memory(64, args.batch_size), peak_memory(512, args.batch_size)
    results = {
        **timing,
        "peak_mib_n64": round(small["peak_mib"], 1),
        "peak_mib_n512": round(large["peak_mib"], 1),
        "peak_n512_over_n64": round(large["peak_mib"] / small["peak_mib"], 3),
        "growth_mib_n64": round(small["peak_mib"] - small["before_mib"], 1),
        "growth_mib_n512": round(large["peak_mib"] - large["before_mib"], 1),
    }
    print(f"means / plain HF forward over {args.n} prompts: {results['means_over_forward']:.3f}  (target <= 1.0)")
    print(
        f"peak memory N=512 / N=64: {results['peak_n512_over_n64']:.3f}  (target <= 1.1; "
        f"{results['peak_mib_n512']} vs {results['peak_mib_n64']} MiB, growth during the means "
        f"{results['growth_mib_n512']} vs {results['growth_mib_n64']} MiB)"
    )
    print(
        common.record(
            "activation_means",
            {"n": args.n, "batch_size": args.batch_size, "model": "embedded", "dtype": "float32"},
            results,
        )
    )


if __name__ == "__main__":
    main()
