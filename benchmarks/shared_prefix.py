"""The rows' shared prompt prefix run once per intervention group (`mechrefusal.train.prefix`) against every
row running it, side by side in one run: the README configuration's fail-closed training step on the
embedded model (the benchmarks' stock examples; half the harmful and half the harmless rows under an
ablated direction, as fail-closed's mixed shares put them), the reference's logits kept as in the trainer.

    python benchmarks/shared_prefix.py [--batch 16] [--train-layers 10:20] [--repeats 4] [--blocks 3]

Prints the median seconds of a step each way (blocks of calls after a warm-up, the ways alternating block by
block so that a host's drift hits both), the ratio shared / whole (below 1: sharing is faster), the prefix
length against the rows' padded width, and the largest difference between the two ways' losses (float
rounding only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mechrefusal import Ablate, Direction  # noqa: E402
from mechrefusal.models.autocast import cast_once  # noqa: E402
from mechrefusal.train.loop import _loss, _replies  # noqa: E402
from mechrefusal.train.prefix import shared_prefix_length  # noqa: E402
from mechrefusal.train.reference import ReferenceLogits  # noqa: E402


def main() -> None:
    args = common.step_arguments(__doc__, repeats=4)
    bench = common.step_setup(args)
    half = args.batch // 2
    direction = Direction(torch.randn(bench.model.d_model, generator=torch.Generator().manual_seed(0)), 12, -1, "t")
    groups = [(list(range(half // 2)), Ablate(direction)), (list(range(half // 2, half)), None)]
    original = ReferenceLogits(bench.reference)
    batch = _replies(bench.model, bench.harmful)
    prefix = shared_prefix_length(bench.model, [(batch, groups)])
    steps = {
        way: bench.step(
            lambda share=share: _loss(
                bench.model, original, bench.harmful, bench.harmless, bench.settings, groups, groups, share_prefix=share
            )
        )
        for way, share in (("shared", True), ("whole", False))
    }
    with cast_once(bench.model), cast_once(bench.reference):  # as `train_round` holds them
        seconds, losses = common.alternating(steps, args.blocks, args.repeats)
    results = {
        "shared_s": round(seconds["shared"], 3),
        "whole_s": round(seconds["whole"], 3),
        "ratio": round(seconds["shared"] / seconds["whole"], 3),
        "prefix_tokens": prefix,
        "harmful_width": batch.input_ids.shape[1],
        "max_loss_difference": max(abs(a - b) for a, b in zip(losses["shared"], losses["whole"])),
    }
    print(
        f"step shared {seconds['shared']:.3f} s, whole {seconds['whole']:.3f} s: {results['ratio']:.2f}x; "
        f"prefix {results['prefix_tokens']} of {results['harmful_width']} tokens a harmful row; "
        f"losses differ by at most {results['max_loss_difference']:.2e}"
    )
    print(common.record("shared_prefix", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


if __name__ == "__main__":
    main()
