"""Cost of one re-search attack round against the trainer's direction search, side by side in one run.

    python benchmarks/research_round.py [--model SPEC] [--finder dim] [--dtype auto] [--repeats 1]

On the embedded model (or ``--model``) with one saved direction (the model's own first direction, found
untimed by the trainer's search, as a round-1 checkpoint would hold): the time of one round of the
re-search attack (`ReSearch(m=1)`, conditioned: the saved direction ablated, the search in its
complement) divided by the time of the trainer's `next_direction` with the same direction, finder,
filters (KL <= ``--max-kl``) and sizes (64+64 train prompts, 16+16 validation prompts). Both run
`find_direction`, so the ratio measures the attack's own overhead. Target (issue 14 item 6): <= 1.1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import mechrefusal  # noqa: E402
from mechrefusal.attacks.research import ReSearch  # noqa: E402
from mechrefusal.core.precision import DTYPES  # noqa: E402
from mechrefusal.directions import DirectionSet, SelectionFilters  # noqa: E402
from mechrefusal.train.search import N_SCORE, N_SEARCH, next_direction  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec for mechrefusal.load (default: embedded)")
    parser.add_argument("--finder", default="dim", choices=("dim", "rdo"))
    parser.add_argument("--max-kl", type=float, default=0.6, help="the selection's KL filter (round 0: 0.6)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype (mechrefusal.core.precision)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls of each search (after a warm-up)")
    args = parser.parse_args()

    model = mechrefusal.load(args.model) if args.model else mechrefusal.load()
    filters = SelectionFilters(max_kl=args.max_kl)
    common_options = dict(finder=args.finder, filters=filters, dtype=args.dtype, fallback=False, progress=False)
    first = next_direction(model, DirectionSet(), **common_options)
    model.directions = DirectionSet([first])
    attack = ReSearch(m=1, finder=args.finder, n_prompts=N_SEARCH, n_val=N_SCORE, max_kl=args.max_kl, dtype=args.dtype)
    found = {}

    def trainer():
        found["trainer"] = next_direction(model, model.directions, **common_options)

    def research():
        [found["research"]] = attack._search(model, None)  # uncached: every call searches

    seconds = {
        "trainer": common.best_time(trainer, repeats=args.repeats),
        "research": common.best_time(research, repeats=args.repeats),
    }
    same = bool((found["trainer"].vector == found["research"].vector).all())
    results = {
        "trainer_search_s": round(seconds["trainer"], 2),
        "research_round_s": round(seconds["research"], 2),
        "research_over_trainer": round(seconds["research"] / seconds["trainer"], 3),
        "same_direction": same,
        "found": {"layer": found["research"].layer, "position": found["research"].position},
    }
    config = {
        "model": model.spec,
        "finder": args.finder,
        "dtype": args.dtype,
        "n_search": N_SEARCH,
        "n_val": N_SCORE,
        "filters": vars(filters),
        "saved": {"layer": first.layer, "position": first.position},
        "repeats": args.repeats,
    }
    print(common.record("research_round", config, results, device=str(model.device)))


if __name__ == "__main__":
    main()
