"""Long prompts batched whole against batches split to `MAX_BATCH_TOKENS`, side by side in one run.

    python benchmarks/batch_budget.py [--model SPEC] [--dtype auto] [--behaviours 5] [--tokens 64] [--quick]

The prompts are the human-template test cases of the first ``--behaviours`` HarmBench test behaviours
(the quick preset's attack: 3 templates each, at most 1,024 prompt tokens). Two jobs are timed, each
with every batch whole (the budget raised out of reach) and with the default budget: projecting the
prompts on a direction at every layer (float32, as `fig_fail_open.py` does) and answering them greedily
(``--dtype``). Prints whole time / split time per job (above 1: splitting is faster).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal.analysis.projections import projections  # noqa: E402
from mechrefusal.attacks.behaviours import load_behaviours  # noqa: E402
from mechrefusal.attacks.human import HumanTemplates  # noqa: E402
from mechrefusal.core.directions import Direction, DirectionSet  # noqa: E402
from mechrefusal.measure.generation import generate  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402
from mechrefusal.models import model as model_module  # noqa: E402

UNSPLIT = 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--behaviours", type=int, default=5, help="HarmBench test behaviours (default: 5)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (default: 64)")
    parser.add_argument("--quick", action="store_true", help="2 behaviours, 8 tokens, one repeat: a smoke run")
    args = parser.parse_args()
    n, tokens, repeats = (2, 8, 1) if args.quick else (args.behaviours, args.tokens, 1)

    model = mechrefusal.load(args.model)
    attack = HumanTemplates.preset("cpu")
    prompts = [case.prompt for b in load_behaviours("harmbench", n) for case in attack.run(model, b)]
    unit = torch.nn.functional.normalize(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)), dim=0)
    every_layer = DirectionSet([Direction(unit, layer, -1, "random") for layer in range(model.n_layers)])
    jobs = {
        "projections": partial(projections, model, prompts, every_layer),
        "generation": partial(generate, model, prompts, max_new_tokens=tokens),
    }
    budget = model_module.MAX_BATCH_TOKENS
    times: dict[str, float] = {}
    for job, run in jobs.items():
        for label, tokens_per_batch in (("whole", UNSPLIT), ("split", budget)):
            model_module.MAX_BATCH_TOKENS = tokens_per_batch
            if job == "generation":
                with autocast(model, args.dtype):
                    times[f"{job}_{label}_s"] = common.best_time(run, repeats)
            else:
                times[f"{job}_{label}_s"] = common.best_time(run, repeats)
    model_module.MAX_BATCH_TOKENS = budget
    lengths = sorted(len(model.chat.encode(model.chat.prompt(p))) for p in prompts)
    ratios = {job: times[f"{job}_whole_s"] / times[f"{job}_split_s"] for job in jobs}
    for job, ratio in ratios.items():
        print(
            f"{job}: whole / split at {budget} tokens: {ratio:.2f}  "
            f"({times[f'{job}_whole_s']:.1f} s vs {times[f'{job}_split_s']:.1f} s)"
        )
    results = {key: round(value, 2) for key, value in times.items()}
    results |= {f"{job}_ratio": round(ratio, 3) for job, ratio in ratios.items()}
    config = vars(args) | {
        "model": args.model or "embedded",
        "n_prompts": len(prompts),
        "prompt_tokens": [lengths[0], lengths[-1]],
        "budget": budget,
        "repeats": repeats,
    }
    print(common.record("batch_budget", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
