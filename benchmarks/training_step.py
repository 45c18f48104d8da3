"""Cost of a progressive-training step with ablation against a plain fine-tuning step, side by side.

    python benchmarks/training_step.py [--batch 16] [--train-layers 10:20] [--dtype auto]

Prints (target from the trainer issue): ablated step / plain step (<= 1.10), where a step is the
forward and backward of the safety and utility losses on one batch and the optimiser update, with
two directions ablated at every layer, site and position in the ablated step. Also prints the bf16
speed-up of a plain step over fp32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Ablate, Direction  # noqa: E402
from mechrefusal.train import TrainSettings  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all, trainable_parameters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-layers", default="10:20")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = parser.parse_args()

    model, reference = mechrefusal.load(), mechrefusal.load()
    half = args.batch // 2
    harmful, harmless = common.training_examples(half)
    torch.manual_seed(0)
    directions = [Direction(torch.randn(model.d_model), layer, -1, "random") for layer in (22, 18)]

    def step(plan, dtype):
        settings = TrainSettings(batch_size=args.batch, train_layers=args.train_layers, dtype=dtype)
        parameters = trainable_parameters(model, settings)
        optimizer = torch.optim.AdamW(parameters, lr=1e-6)

        def run():
            optimizer.zero_grad(set_to_none=True)
            _loss(model, reference, harmful, harmless, settings, plan(0, half)).backward()
            optimizer.step()

        return run

    model.hf_model.train()
    t = {
        "plain_step_s": common.best_time(step(ablate_all(None), args.dtype)),
        "ablated_step_s": common.best_time(step(ablate_all(Ablate(directions)), args.dtype)),
        "plain_step_fp32_s": common.best_time(step(ablate_all(None), "float32")),
    }
    results = {key: round(value, 3) for key, value in t.items()}
    results["ablated_over_plain"] = round(t["ablated_step_s"] / t["plain_step_s"], 3)
    results["bf16_speedup"] = round(t["plain_step_fp32_s"] / t["plain_step_s"], 3)
    print(
        f"ablated step / plain step: {results['ablated_over_plain']:.3f}  (target <= 1.10; "
        f"{results['ablated_step_s']} s vs {results['plain_step_s']} s, {args.dtype})"
    )
    print(f"bf16 speed-up of a plain step over fp32: {results['bf16_speedup']:.2f}x")
    print(common.record("training_step", vars(args) | {"model": "embedded", "directions_ablated": 2}, results))


if __name__ == "__main__":
    main()
