"""Does ``dtype="auto"`` pick the faster precision? A sweep step and a training step, each timed in auto,
forced float32 and forced bfloat16, side by side.

    python benchmarks/precision_policy.py [--batch 16] [--n 32]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/precision_policy.py   # a slow-bf16 CPU

Prints auto ÷ the best of (fp32, bf16) for each step (target <= 1.05: auto never picks the slow one).
Holding oneDNN and ATen to AVX2 reproduces an AVX2-only CPU on a fast one: there a 512³ bf16 matmul
runs about 70x slower than fp32 (`mechrefusal.core.precision` explains the probe).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import Ablate, Direction, data  # noqa: E402
from mechrefusal.core.precision import resolve
from mechrefusal.measure.metrics import last_token_logprobs  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402
from mechrefusal.train import TrainSettings  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all, trainable_parameters  # noqa: E402

DTYPES = ("auto", "float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=32, help="prompts per sweep step")
    parser.add_argument("--train-layers", default="10:20")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # forced bf16 on a slow CPU warns; that is the point here

    model, reference = mechrefusal.load(device="cpu"), mechrefusal.load(device="cpu")
    prompts = data.load("harmful", "val")[: args.n]
    ablate = Ablate(Direction(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)), 12, -1, "random"))
    half = args.batch // 2
    harmful, harmless = common.training_examples(half)

    def sweep(dtype):
        def run():
            with autocast(model, dtype):
                last_token_logprobs(model, prompts, intervention=ablate, batch_size=args.batch)

        return run

    def training(dtype):
        settings = TrainSettings(batch_size=args.batch, train_layers=args.train_layers, dtype=dtype, device="cpu")
        parameters = trainable_parameters(model, settings)
        optimizer = torch.optim.AdamW(parameters, lr=1e-6)

        def run():
            optimizer.zero_grad(set_to_none=True)
            _loss(model, reference, harmful, harmless, settings, ablate_all(ablate)(0, half)).backward()
            optimizer.step()

        return run

    t = {f"sweep_{d}_s": common.best_time(sweep(d)) for d in DTYPES}
    model.hf_model.train()
    t |= {f"train_{d}_s": common.best_time(training(d), repeats=2) for d in DTYPES}
    results = {key: round(value, 3) for key, value in t.items()}
    for step in ("sweep", "train"):
        best = min(t[f"{step}_float32_s"], t[f"{step}_bfloat16_s"])
        results[f"{step}_auto_over_best"] = round(t[f"{step}_auto_s"] / best, 3)
        results[f"{step}_bf16_over_fp32_speed"] = round(t[f"{step}_float32_s"] / t[f"{step}_bfloat16_s"], 3)
    chosen = resolve("auto", "cpu")
    print(f"auto chose {chosen.dtype} ({chosen.reason})")
    for step in ("sweep", "train"):
        print(
            f"{step} step: auto / best of (fp32, bf16) = {results[f'{step}_auto_over_best']:.3f} (target <= 1.05); "
            f"bf16 runs at {results[f'{step}_bf16_over_fp32_speed']:.3g}x fp32 speed"
        )
    print(common.record("precision_policy", vars(args) | {"model": "embedded", "dtype": "auto"}, results))


if __name__ == "__main__":
    main()
