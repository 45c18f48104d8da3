"""Refusal table of training checkpoints on the held-out test splits (docs/results.md, trainer issue).

    python analyses/trainer_table.py CKPT [CKPT ...] [--n 64] [--max-new-tokens 32]

Each checkpoint is judged with its own saved directions: harmful refusal plain, with each direction
ablated alone and with all ablated; harmless and over-refusal refusal; first-token KL on harmless
prompts with all directions ablated. Prints a markdown table and one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal.evaluation import refusal_rates
from mechrefusal.provenance import versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    print("| checkpoint | harmful | single ablations (min) | all ablated | harmless | over-refusal | KL all ablated |")
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        model = mechrefusal.load(checkpoint)
        rates = refusal_rates(model, model.directions, n=args.n, max_new_tokens=args.max_new_tokens)
        singles = [value for key, value in rates.items() if key.startswith("harmful, d")]
        single_text = f"{', '.join(f'{v:.0%}' for v in singles)} ({min(singles):.0%})" if singles else "-"
        every = rates.get("harmful, all ablated", singles[0] if singles else None)
        kl = rates.get("kl_harmless_all_ablated")
        print(f"| {checkpoint} | {rates['harmful']:.0%} | {single_text} | {'-' if every is None else f'{every:.0%}'} | "
              f"{rates['harmless']:.0%} | {rates['overrefusal']:.0%} | {'-' if kl is None else f'{kl:.3f}'} |")
        print(json.dumps({"checkpoint": checkpoint, "rates": rates, "n": args.n,
                          "max_new_tokens": args.max_new_tokens, "versions": versions()}))


if __name__ == "__main__":
    main()
