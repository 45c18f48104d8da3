"""Greedy generation of the same prompts at batch 16 (the old default) and at `GENERATION_BATCH_SIZE`,
side by side in one run.

    python benchmarks/generation_batch.py [--model SPEC] [--dtype auto] [--n 128] [--tokens 32] [--quick]

Prints the time of each and the ratio batch-16 time / default-batch time (above 1: the default is faster).
The prompts are the first ``--n`` harmless and over-refusal train prompts, the set the trainer generates
its utility targets from; each time is the best of ``repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.measure.generation import GENERATION_BATCH_SIZE, generate  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402

OLD_BATCH_SIZE = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--n", type=int, default=128, help="prompts generated (default: 128)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per prompt (default: 32)")
    parser.add_argument("--quick", action="store_true", help="16 prompts, 8 tokens, one repeat: a smoke run")
    args = parser.parse_args()
    n, tokens, repeats = (16, 8, 1) if args.quick else (args.n, args.tokens, 2)

    model = mechrefusal.load(args.model)
    prompts = (data.load("harmless", "train") + data.load("overrefusal", "train"))[:n]
    times = {}
    with autocast(model, args.dtype):
        generate(model, prompts[:4], max_new_tokens=2)
        for batch_size in (OLD_BATCH_SIZE, GENERATION_BATCH_SIZE):
            run = partial(generate, model, prompts, max_new_tokens=tokens, batch_size=batch_size)
            times[batch_size] = common.best_time(run, repeats)
    ratio = times[OLD_BATCH_SIZE] / times[GENERATION_BATCH_SIZE]
    print(
        f"generation at batch {OLD_BATCH_SIZE} / at batch {GENERATION_BATCH_SIZE}: {ratio:.2f}  "
        f"({times[OLD_BATCH_SIZE]:.1f} s vs {times[GENERATION_BATCH_SIZE]:.1f} s; {len(prompts)} prompts x "
        f"{tokens} tokens, {args.dtype})"
    )
    results = {f"batch_{size}_s": round(seconds, 2) for size, seconds in times.items()} | {"ratio": round(ratio, 3)}
    config = vars(args) | {"model": args.model or "embedded", "n_prompts": len(prompts), "repeats": repeats}
    print(common.record("generation_batch", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
