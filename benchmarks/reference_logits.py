"""The reference model's reply logits kept from round to round (`mechrefusal.train.reference.ReferenceLogits`)
against a forward pass of the reference at every step, side by side in one run: the README configuration's
training step on the embedded model (the benchmarks' stock examples: train prompts, short replies), its
harmless examples already kept (as in every round after the first).

    python benchmarks/reference_logits.py [--batch 16] [--train-layers 10:20] [--repeats 4] [--blocks 3]

Prints the median seconds of a step each way (blocks of calls after a warm-up, the ways alternating block by
block so that a host's drift hits both), the ratio kept / forward (below 1: keeping is faster), the largest
difference between the two ways' losses (float rounding only) and the memory one kept example takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mechrefusal.models.autocast import cast_once  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all  # noqa: E402
from mechrefusal.train.reference import ReferenceLogits  # noqa: E402


def main() -> None:
    args = common.step_arguments(__doc__, repeats=4)
    bench = common.step_setup(args)
    ways = {"kept": ReferenceLogits(bench.reference), "forward": ReferenceLogits(bench.reference, budget_bytes=0)}
    groups = ablate_all(None)(0, args.batch // 2)
    steps = {
        way: bench.step(
            lambda original=original: _loss(
                bench.model, original, bench.harmful, bench.harmless, bench.settings, groups
            )
        )
        for way, original in ways.items()
    }
    with cast_once(bench.model), cast_once(bench.reference):  # as `train_round` holds them
        seconds, losses = common.alternating(steps, args.blocks, args.repeats)  # the kept way's warm-up fills it
    results = {
        "kept_s": round(seconds["kept"], 3),
        "forward_s": round(seconds["forward"], 3),
        "ratio": round(seconds["kept"] / seconds["forward"], 3),
        "max_loss_difference": max(abs(a - b) for a, b in zip(losses["kept"], losses["forward"])),
        "kept_mib_per_example": round(ways["kept"].kept_bytes / len(bench.harmless) / 2**20, 2),
    }
    print(
        f"step kept {seconds['kept']:.3f} s, forward {seconds['forward']:.3f} s: {results['ratio']:.2f}x; "
        f"losses differ by at most {results['max_loss_difference']:.2e}; "
        f"{results['kept_mib_per_example']} MiB kept per example"
    )
    print(common.record("reference_logits", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


if __name__ == "__main__":
    main()
