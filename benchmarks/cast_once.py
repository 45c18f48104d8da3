"""Frozen linear weights cast once per context (`mechrefusal.models.autocast.cast_once`) against
torch.autocast casting them at every call, side by side in one run: the README configuration's training
step, inside the context the trainer holds for a round (its frozen layers and the reference model are
otherwise cast at every forward pass), and a greedy generation of the trained model, frozen as the trainer
leaves it after its round.

    python benchmarks/cast_once.py [--batch 16] [--train-layers 10:20] [--repeats 6] [--blocks 3]

Prints the median seconds of each way (blocks of calls after a warm-up, the two ways alternating block by
block so that a host's drift hits both), the ratio kept / every call (below 1: keeping the casts is faster)
and whether the losses and replies are identical (they must be). Only where auto resolves to bf16: in
float32 nothing is cast.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from mechrefusal import data  # noqa: E402
from mechrefusal.measure.generation import generate  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402
from mechrefusal.train.loop import _loss, ablate_all  # noqa: E402

CASTING = sys.modules["mechrefusal.models.autocast"]


def main() -> None:
    args = common.step_arguments(__doc__, repeats=6)
    common.require_bf16("nothing is cast, nothing to compare.")
    bench = common.step_setup(args)
    model, reference, parameters = bench.model, bench.reference, bench.parameters
    step = bench.step(
        lambda: _loss(
            model, reference, bench.harmful, bench.harmless, bench.settings, ablate_all(None)(0, args.batch // 2)
        )
    )

    prompts = data.load("harmful", "test")[:32]

    def generation() -> list[str]:
        with autocast(model, "auto"):
            return generate(model, prompts, max_new_tokens=32)

    @contextmanager
    def round_scope() -> Iterator[None]:
        with CASTING.cast_once(model), CASTING.cast_once(reference):  # as `train_round` holds them
            yield

    step_s, step_out = side_by_side(step, round_scope, args)
    model.hf_model.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)  # as the trainer leaves a model after its round
    generation_s, generation_out = side_by_side(generation, nullcontext, args)  # autocast's own context
    results = {}
    for name, seconds, outputs in (("step", step_s, step_out), ("generation", generation_s, generation_out)):
        results[name] = {
            "kept_s": round(seconds["kept"], 3),
            "every_call_s": round(seconds["every call"], 3),
            "ratio": round(seconds["kept"] / seconds["every call"], 3),
            "identical": outputs["kept"] == outputs["every call"],
        }
        print(
            f"{name:<11} kept {seconds['kept']:.3f} s, every call {seconds['every call']:.3f} s: "
            f"{results[name]['ratio']:.2f}x, identical: {results[name]['identical']}"
        )
    print(common.record("cast_once", vars(args) | {"dtype": "auto", "model": "embedded"}, results))


def side_by_side(
    fn: Callable[[], object], scope: Callable[[], AbstractContextManager], args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds and the last output of ``fn`` each way: blocks of a warm-up and ``args.repeats``
    calls, the ways alternating block by block; the kept way's block runs inside ``scope()``, the other
    with `cast_once` switched off."""
    kept_casts = CASTING.cast_once
    times: dict[str, list[float]] = {"kept": [], "every call": []}
    outputs = {}
    try:
        for _ in range(args.blocks):
            for way in times:
                CASTING.cast_once = kept_casts if way == "kept" else lambda model: nullcontext()
                with scope() if way == "kept" else nullcontext():
                    outputs[way] = fn()  # warm-up
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        outputs[way] = fn()
                        times[way].append(time.perf_counter() - started)
    finally:
        CASTING.cast_once = kept_casts
    return {way: statistics.median(seconds) for way, seconds in times.items()}, outputs


if __name__ == "__main__":
    main()
