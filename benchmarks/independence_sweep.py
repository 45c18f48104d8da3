"""Cost of the independence sweep against plain forward passes, measured side by side in one run.

    python benchmarks/independence_sweep.py [--model SPEC] [--n 64] [--batch 16] [--stack 8] [--dtype auto]

The sweep scores held-out harmful prompts under every configuration the independence analysis uses
for K=4 directions (none, 4 singles, 6 pairs, cumulative first 3, all: 13 configurations) with
`mechrefusal.measure.sweep.ablation_scores`. The reference is 13 plain forward passes (no hooks, logits of the
last position only) over the same pre-tokenized prompts. Prints sweep / reference (target <= 1.2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Direction, DirectionSet, data  # noqa: E402
from mechrefusal.analysis.independence import standard_subsets  # noqa: E402
from mechrefusal.measure.sweep import ablation_scores  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402

K = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--n", type=int, default=64, help="harmful test prompts")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--stack", type=int, default=8, help="configurations per forward pass")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = parser.parse_args()

    model = mechrefusal.load(args.model)
    prompts = data.load("harmful", "test")[: args.n]
    generator = torch.Generator().manual_seed(0)
    directions = DirectionSet(
        [
            Direction(torch.randn(model.d_model, generator=generator), model.n_layers // 2, -1, "random")
            for _ in range(K)
        ]
    )
    subsets = standard_subsets(K)
    batches = [batch for _, batch in model.batches(prompts, args.batch)]

    def sweep():
        with autocast(model, args.dtype):
            ablation_scores(model, prompts, directions, subsets, batch_size=args.batch, stack=args.stack)

    def plain():
        with torch.no_grad(), autocast(model, args.dtype):
            for _ in subsets:
                for batch in batches:
                    model.bridge(batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)

    t = {"plain_passes_s": common.best_time(plain), "sweep_s": common.best_time(sweep)}
    results = {key: round(value, 3) for key, value in t.items()}
    results["sweep_over_plain"] = round(t["sweep_s"] / t["plain_passes_s"], 3)
    print(
        f"independence sweep, {len(subsets)} configurations of K={K} directions over {len(prompts)} prompts: "
        f"{t['sweep_s']:.2f} s; {len(subsets)} plain forward passes: {t['plain_passes_s']:.2f} s"
    )
    print(f"sweep / plain passes: {results['sweep_over_plain']:.3f}  (target <= 1.2)")
    print(
        common.record(
            "independence_sweep",
            {
                "model": model.spec,
                "n": len(prompts),
                "batch": args.batch,
                "stack": args.stack,
                "dtype": args.dtype,
                "k": K,
                "configurations": len(subsets),
            },
            results,
        )
    )


if __name__ == "__main__":
    main()
