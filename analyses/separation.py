"""How well checkpoints' first-token refusal score separates harmful from edgy and harmless prompts.

    python analyses/separation.py CKPT [CKPT ...] [--split val] [--keep 0.9]

No generation: the toolkit's refusal score (mechrefusal.measure.metrics.refusal_score) on every bundled
harmful, over-refusal (edgy) and harmless prompt of the split. Per checkpoint: the ROC AUC of harmful against
edgy and against harmless prompts, and the share of edgy and harmless prompts above the threshold that keeps
``--keep`` of the harmful ones — the over-refusal a model refusing that share of harmful prompts by this score
would have. A lever that only moves the threshold leaves the AUC where it was (docs/results.md, session 42).
Prints a markdown table and one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal import data
from mechrefusal.core.precision import hardware
from mechrefusal.core.provenance import versions
from mechrefusal.measure.metrics import refusal_score
from mechrefusal.measure.separation import roc_auc, share_above


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--split", choices=data.SPLITS, default="val")
    parser.add_argument("--keep", type=float, default=0.9, help="share of harmful prompts the threshold keeps")
    args = parser.parse_args()
    if not 0 < args.keep < 1:
        parser.error(f"--keep must lie between 0 and 1, got {args.keep}.")
    prompts = {name: data.load(name, args.split) for name in ("harmful", "overrefusal", "harmless")}
    counts = {name: len(items) for name, items in prompts.items()}
    print(
        f"| checkpoint | AUC harmful vs edgy | AUC harmful vs harmless | edgy above the {args.keep:.0%}-harmful "
        "threshold | harmless above it |"
    )
    print("|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        model = mechrefusal.load(checkpoint)
        harmful, edgy, harmless = (refusal_score(model, prompts[name]) for name in prompts)
        row = {
            "auc_harmful_vs_edgy": roc_auc(harmful, edgy),
            "auc_harmful_vs_harmless": roc_auc(harmful, harmless),
            "edgy_above": share_above(harmful, edgy, args.keep),
            "harmless_above": share_above(harmful, harmless, args.keep),
        }
        print(
            f"| {checkpoint} | {row['auc_harmful_vs_edgy']:.3f} | {row['auc_harmful_vs_harmless']:.3f} | "
            f"{row['edgy_above']:.0%} of {len(edgy)} | {row['harmless_above']:.0%} of {len(harmless)} |"
        )
        record = {"checkpoint": checkpoint, **row, "split": args.split, "keep": args.keep, "n": counts}
        print(json.dumps({**record, "dtype": str(model.dtype), "hardware": hardware(), "versions": versions()}))


if __name__ == "__main__":
    main()
