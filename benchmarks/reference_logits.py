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

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal.core.memory import keep_freed_memory  # noqa: E402
from mechrefusal.models.autocast import cast_once  # noqa: E402
from mechrefusal.train import TrainSettings  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all, trainable_parameters  # noqa: E402
from mechrefusal.train.reference import ReferenceLogits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-layers", default="10:20")
    parser.add_argument("--repeats", type=int, default=4, help="timed steps per block (default: 4)")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per way, the ways alternating (default: 3)")
    args = parser.parse_args()
    keep_freed_memory()
    model, reference = mechrefusal.load(), mechrefusal.load()
    reference.bridge.requires_grad_(False)  # as the trainer holds it
    harmful, harmless = common.training_examples(args.batch // 2)
    settings = TrainSettings(batch_size=args.batch, train_layers=args.train_layers, dtype="auto")
    parameters = trainable_parameters(model, settings)
    start = [parameter.detach().clone() for parameter in parameters]
    ways = {"kept": ReferenceLogits(reference), "forward": ReferenceLogits(reference, budget_bytes=0)}
    groups = ablate_all(None)(0, args.batch // 2)

    def step(original: ReferenceLogits) -> float:
        """One optimiser step from the same weights (restored first), its loss."""
        with torch.no_grad():
            for parameter, value in zip(parameters, start):
                parameter.copy_(value)
        optimizer = torch.optim.SGD(parameters, lr=1e-3)
        loss = _loss(model, original, harmful, harmless, settings, groups)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    times: dict[str, list[float]] = {way: [] for way in ways}
    losses: dict[str, list[float]] = {way: [] for way in ways}
    model.hf_model.train()
    with cast_once(model), cast_once(reference):  # as `train_round` holds them
        for _ in range(args.blocks):
            for way, original in ways.items():
                step(original)  # warm-up (the kept way's first call fills it)
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    losses[way].append(step(original))
                    times[way].append(time.perf_counter() - started)
    seconds = {way: statistics.median(values) for way, values in times.items()}
    results = {
        "kept_s": round(seconds["kept"], 3),
        "forward_s": round(seconds["forward"], 3),
        "ratio": round(seconds["kept"] / seconds["forward"], 3),
        "max_loss_difference": max(abs(a - b) for a, b in zip(losses["kept"], losses["forward"])),
        "kept_mib_per_example": round(ways["kept"].kept_bytes / len(harmless) / 2**20, 2),
    }
    print(
        f"step kept {seconds['kept']:.3f} s, forward {seconds['forward']:.3f} s: {results['ratio']:.2f}x; "
        f"losses differ by at most {results['max_loss_difference']:.2e}; "
        f"{results['kept_mib_per_example']} MiB kept per example"
    )
    print(common.record("reference_logits", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


if __name__ == "__main__":
    main()
