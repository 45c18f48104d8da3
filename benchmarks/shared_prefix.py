"""The prompts' shared prefix run once (`mechrefusal.train.prefix` in training, `generate_ids`' prefill in
generation) against every row running it, side by side in one run on the embedded model:

* the README configuration's fail-closed training step (the benchmarks' stock examples; half the harmful and
  half the harmless rows under an ablated direction, as fail-closed's mixed shares put them), the reference's
  logits kept as in the trainer;
* a greedy generation of 32 tokens for 64 harmless train prompts (one generation batch), under an ablation.

    python benchmarks/shared_prefix.py [--batch 16] [--train-layers 10:20] [--repeats 4] [--blocks 3]

Prints the median seconds of each way (blocks of calls after a warm-up, the ways alternating block by block so
that a host's drift hits both; generation: one call a block), the ratio shared / whole (below 1: sharing is
faster), the prefix length against the rows' padded width, and whether the two ways agree (losses to float
rounding, replies token for token).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mechrefusal import Ablate, Direction, data  # noqa: E402
from mechrefusal.measure import generation  # noqa: E402
from mechrefusal.models.autocast import autocast, cast_once  # noqa: E402
from mechrefusal.train.loop import _loss, _replies  # noqa: E402
from mechrefusal.train.prefix import shared_prefix_length  # noqa: E402
from mechrefusal.train.reference import ReferenceLogits  # noqa: E402


def main() -> None:
    args = common.step_arguments(__doc__, repeats=4)
    bench = common.step_setup(args)
    model, half = bench.model, args.batch // 2
    ablate = Ablate(Direction(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)), 12, -1, "t"))
    groups = [(list(range(half // 2)), ablate), (list(range(half // 2, half)), None)]
    original = ReferenceLogits(bench.reference)
    batch = _replies(model, bench.harmful)
    prefix = shared_prefix_length(model, [(batch, groups)])
    steps = {
        way: bench.step(
            lambda share=share: _loss(
                model, original, bench.harmful, bench.harmless, bench.settings, groups, groups, share_prefix=share
            )
        )
        for way, share in (("shared", True), ("whole", False))
    }
    with cast_once(model), cast_once(bench.reference):  # as `train_round` holds them
        step_s, losses = common.alternating(steps, args.blocks, args.repeats)

    model.hf_model.eval()
    prompts = data.load("harmless", "train")[:64]
    sharing = generation._prefill_shared_prefix
    replies: dict[str, list] = {}

    def generate(way: str):
        def call() -> float:
            generation._prefill_shared_prefix = (
                sharing if way == "shared" else lambda m, b, c: (b.input_ids, b.attention_mask)
            )
            try:
                with autocast(model, "auto"):
                    replies[way] = generation.generate_ids(model, prompts, max_new_tokens=32, intervention=ablate)
            finally:
                generation._prefill_shared_prefix = sharing
            return 0.0

        return call

    generation_s, _ = common.alternating({way: generate(way) for way in ("shared", "whole")}, args.blocks, 1)
    results = {
        "step": {
            "shared_s": round(step_s["shared"], 3),
            "whole_s": round(step_s["whole"], 3),
            "ratio": round(step_s["shared"] / step_s["whole"], 3),
            "prefix_tokens": prefix,
            "harmful_width": batch.input_ids.shape[1],
            "max_loss_difference": max(abs(a - b) for a, b in zip(losses["shared"], losses["whole"])),
        },
        "generation": {
            "shared_s": round(generation_s["shared"], 3),
            "whole_s": round(generation_s["whole"], 3),
            "ratio": round(generation_s["shared"] / generation_s["whole"], 3),
            "identical": replies["shared"] == replies["whole"],
        },
    }
    step, gen = results["step"], results["generation"]
    print(
        f"training step: shared {step['shared_s']:.3f} s, whole {step['whole_s']:.3f} s: {step['ratio']:.2f}x; "
        f"prefix {prefix} of {step['harmful_width']} tokens a harmful row; "
        f"losses differ by at most {step['max_loss_difference']:.2e}"
    )
    print(
        f"generation 64 x 32 tokens: shared {gen['shared_s']:.3f} s, whole {gen['whole_s']:.3f} s: "
        f"{gen['ratio']:.2f}x; identical replies: {gen['identical']}"
    )
    print(common.record("shared_prefix", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


if __name__ == "__main__":
    main()
