"""Refusal table of training checkpoints on the held-out test splits (docs/results.md, trainer issue).

    python analyses/trainer_table.py CKPT [CKPT ...] [--n 64] [--max-new-tokens 32] [--fresh [dim|rdo]]

Each checkpoint is judged with its own saved directions: harmful refusal plain, with each direction
ablated alone and with all ablated; harmless and over-refusal refusal; first-token KL on harmless
prompts with all directions ablated. ``--fresh [dim|rdo]`` also plays the white-box attacker twice, with
the trainer's search and filters: a new direction found on the checkpoint as it is now (nothing ablated),
ablated alone; and the direction the next round would find (the saved ones ablated, orthogonal to them),
ablated together with all the saved ones. Prints a markdown table and one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal import Ablate, data
from mechrefusal.core.checkpoint_record import read_metadata
from mechrefusal.core.provenance import versions
from mechrefusal.directions import FINDERS, Direction, DirectionSet, SelectionFilters
from mechrefusal.measure.evaluation import refusal_rate, refusal_rates
from mechrefusal.train.search import next_direction
from mechrefusal.train.settings import saved_settings


def fresh_direction(
    model: mechrefusal.Model, checkpoint: str, finder: str, ablated: DirectionSet | None = None
) -> Direction:
    """The direction the checkpoint refuses through with ``ablated`` ablated (orthogonal to them), found as
    the trainer searches (its filters) with ``finder``."""
    settings = saved_settings(read_metadata(checkpoint)["settings"])
    filters = SelectionFilters(max_kl=settings["search.max_kl"], min_induce=settings["search.min_induce"])
    return next_direction(model, ablated or DirectionSet(), finder=finder, filters=filters, dtype=settings["dtype"])


def described(rate: float, direction: Direction) -> str:
    """A refusal rate with where the direction ablated for it sits and what it costs."""
    failed = "" if direction.provenance["passed_filters"] else ", failed filters"
    return f"{rate:.0%} (layer {direction.layer}, KL {direction.provenance['kl']:.2f}{failed})"


def summary(direction: Direction) -> dict:
    """A found direction's place and scores, for the JSON line."""
    scores = {key: direction.provenance[key] for key in ("bypass", "induce", "kl", "passed_filters")}
    return {"layer": direction.layer, "position": direction.position, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--fresh",
        nargs="?",
        const="dim",
        choices=FINDERS.names(),
        default=None,
        metavar="FINDER",
        help="also ablate a direction found anew (alone) and the next round's (with all saved); dim (default) or rdo",
    )
    args = parser.parse_args()
    print(
        "| checkpoint | harmful | single ablations (min) | all ablated | fresh direction ablated | "
        "all saved + next ablated | harmless | over-refusal | KL all ablated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        model = mechrefusal.load(checkpoint)
        rates = refusal_rates(model, model.directions, n=args.n, max_new_tokens=args.max_new_tokens)
        singles = [value for key, value in rates.items() if key.startswith("harmful, d")]
        single_text = f"{', '.join(f'{v:.0%}' for v in singles)} ({min(singles):.0%})" if singles else "-"
        every = rates.get("harmful, all ablated", singles[0] if singles else None)
        kl = rates.get("kl_harmless_all_ablated")
        fresh_text, next_text, found = "-", "-", {}
        if args.fresh:
            harmful = data.load("harmful", "test")[: args.n]
            found["fresh"] = fresh_direction(model, checkpoint, args.fresh)
            saved = model.directions if model.directions is not None else DirectionSet()
            found["next"] = fresh_direction(model, checkpoint, args.fresh, saved)
            for name, ablated in (("fresh", [found["fresh"]]), ("all saved + next", [*saved, found["next"]])):
                rates[f"harmful, {name} ablated"] = refusal_rate(
                    model,
                    harmful,
                    intervention=Ablate(DirectionSet(ablated)),
                    max_new_tokens=args.max_new_tokens,
                    dtype="auto",
                )
            fresh_text = described(rates["harmful, fresh ablated"], found["fresh"])
            next_text = described(rates["harmful, all saved + next ablated"], found["next"])
        print(
            f"| {checkpoint} | {rates['harmful']:.0%} | {single_text} | {'-' if every is None else f'{every:.0%}'} | "
            f"{fresh_text} | {next_text} | {rates['harmless']:.0%} | {rates['overrefusal']:.0%} | "
            f"{'-' if kl is None else f'{kl:.3f}'} |"
        )
        print(
            json.dumps(
                {
                    "checkpoint": checkpoint,
                    "rates": rates,
                    **{f"{name}_direction": summary(direction) for name, direction in found.items()},
                    "n": args.n,
                    "max_new_tokens": args.max_new_tokens,
                    "versions": versions(),
                }
            )
        )


if __name__ == "__main__":
    main()
