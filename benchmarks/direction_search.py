"""Cost of the DIM candidate search in forward passes, attribution and screen side by side in one run.

    python benchmarks/direction_search.py [--model SPEC] [--n-val 16] [--dtype auto] [--repeats 1]

On the embedded model (or ``--model``) with the round-0 trainer's filters (KL <= 0.6, induce >= -10,
under which the untrained model has passing candidates: with none, the attribution search falls back
to the screen and costs more than it) and sizes (64+64 train prompts for the candidates, ``--n-val``
validation prompts per set): the time of `score_candidates` (every step after the candidate means:
baselines, the search, the finalists' exact scores, induce) with ``search="attribution"`` and
``"screen"``, each divided by the time of one forward pass over the same validation prompts
(harmful_val + harmless_val, batch 16). Target: attribution <= 25 forward passes (the screen ~150).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal import data  # noqa: E402
from mechrefusal.core.precision import DTYPES
from mechrefusal.directions.dim import dim_candidates  # noqa: E402
from mechrefusal.directions.selection import FINALISTS, SelectionFilters, score_candidates  # noqa: E402
from mechrefusal.measure.metrics import last_token_logprobs  # noqa: E402
from mechrefusal.models import autocast  # noqa: E402
from mechrefusal.train.search import N_SEARCH  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec for mechrefusal.load (default: embedded)")
    parser.add_argument("--max-kl", type=float, default=0.6)
    parser.add_argument("--min-induce", type=float, default=-10.0)
    parser.add_argument("--n-val", type=int, default=16, help="validation prompts per set (the trainer's: 16)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype (mechrefusal.core.precision)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls of each search (after a warm-up)")
    args = parser.parse_args()

    model = mechrefusal.load(args.model) if args.model else mechrefusal.load()
    train = data.load("harmful", "train")[:N_SEARCH], data.load("harmless", "train")[:N_SEARCH]
    val = data.load("harmful", "val")[: args.n_val], data.load("harmless", "val")[: args.n_val]
    candidates, _ = dim_candidates(model, *train, progress=False)
    filters = SelectionFilters(max_kl=args.max_kl, min_induce=args.min_induce)
    fell_back = {}

    def forward():
        with autocast(model, args.dtype):
            last_token_logprobs(model, val[0] + val[1])

    def search(name: str):
        def run():
            with autocast(model, args.dtype):
                scores = score_candidates(
                    model,
                    candidates,
                    model.post_instruction_positions,
                    *val,
                    filters=filters,
                    search=name,
                    progress=False,
                )
            fell_back[name] = scores.screen_fallback

        return run

    forward_s = common.best_time(forward, repeats=5)
    seconds = {name: common.best_time(search(name), repeats=args.repeats) for name in ("attribution", "screen")}
    results = {
        "forward_s": round(forward_s, 3),
        **{f"{name}_s": round(s, 2) for name, s in seconds.items()},
        **{f"{name}_forward_passes": round(s / forward_s, 1) for name, s in seconds.items()},
        "attribution_speedup": round(seconds["screen"] / seconds["attribution"], 1),
        "attribution_fell_back_to_screen": fell_back["attribution"],
    }
    config = {
        "model": model.spec,
        "n_val": args.n_val,
        "dtype": args.dtype,
        "n_search": N_SEARCH,
        "candidates": list(candidates.shape[:2]),
        "finalists": {k: v for k, v in FINALISTS.items() if v},
        "filters": vars(filters),
        "repeats": args.repeats,
    }
    print(common.record("direction_search", config, results))


if __name__ == "__main__":
    main()
