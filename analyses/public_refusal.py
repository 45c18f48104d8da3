"""Judged refusal on public harmful sets held out from training, beside the team's harmful test split
(docs/results.md, adaptive-attack issue item 5).

    python analyses/public_refusal.py NAME=CKPT [NAME=CKPT ...] [--n 100] [--seed 0] [--judge substring]
        [--sets advbench,harmbench,harmful] [--max-new-tokens 32] [--dtype auto] [--no-ablations]
        [--fresh-from ANALYSIS_DIR]

For each checkpoint: refusal plain, with each saved direction ablated alone and with all of them ablated
(`mechrefusal.measure.generalisation`), on ``--n`` prompts per set drawn with ``--seed`` from the public
prompts the trainer never saw (those whose normalised text is in a bundled train or val split are
dropped, and counted; a set the checkpoint was trained on, ``--public-harmful``, is refused).
``--fresh-from ANALYSIS_DIR`` adds a row with the fresh direction that analysis report found on the
checkpoint ablated (``--no-ablations --fresh-from DIR``: plain and fresh only).
Prints a markdown table (a row per checkpoint and condition, a column per set) and one JSON line with
the samples' sizes, the judge, seed, precision, hardware and versions.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal import data
from mechrefusal.analysis.fresh_direction import fresh_of
from mechrefusal.core.checkpoint_record import public_training_set
from mechrefusal.core.precision import hardware
from mechrefusal.core.provenance import versions
from mechrefusal.measure.generalisation import TEAM_SET, public_refusal
from mechrefusal.measure.judges import JUDGES


def named_checkpoint(text: str) -> tuple[str, str]:
    """``"fc=runs/fc/round-2"`` -> ("fc", "runs/fc/round-2")."""
    name, _, path = text.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=CKPT (a short name, '=', a checkpoint directory).")
    return name, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=named_checkpoint, metavar="NAME=CKPT")
    parser.add_argument("--n", type=int, default=100, help="prompts judged per set and condition")
    parser.add_argument("--seed", type=int, default=0, help="seed of each set's sample")
    parser.add_argument("--sets", default=",".join((*data.PUBLIC_SETS, TEAM_SET)), help="comma-separated sets")
    parser.add_argument("--judge", default="substring", choices=JUDGES.names())
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-ablations", action="store_true", help="no saved direction ablated")
    parser.add_argument(
        "--fresh-from", metavar="ANALYSIS_DIR", help="also ablate the fresh direction this report found"
    )
    args = parser.parse_args()
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    results = {}
    try:
        for name, checkpoint in args.checkpoints:
            trained_on = public_training_set(checkpoint)
            if trained_on in sets:
                others = ",".join(s for s in sets if s != trained_on) or TEAM_SET
                parser.error(f"{name} was trained on {trained_on}; score only sets it never saw (--sets {others}).")
            fresh = {"fresh": fresh_of(args.fresh_from, checkpoint)} if args.fresh_from else None
            results[name] = public_refusal(
                mechrefusal.load(checkpoint),
                sets=sets,
                n=args.n,
                seed=args.seed,
                judge=args.judge,
                ablations=not args.no_ablations,
                extra=fresh,
                max_new_tokens=args.max_new_tokens,
                dtype=args.dtype,
            )
    except mechrefusal.MechrefusalError as error:
        parser.error(str(error))
    first = next(iter(results.values()))
    columns = [
        f"{'team harmful (test)' if name == TEAM_SET else name} (n={sample.n}, {sample.dropped} dropped)"
        for name, sample in ((name, first.samples[name]) for name in first.samples)
    ]
    print(f"| checkpoint | condition | {' | '.join(columns)} |")
    print("|---|---|" + "---|" * len(columns))
    for name, result in results.items():
        print(*result.markdown(name), sep="\n")
    print(
        json.dumps(
            {
                "checkpoints": dict(args.checkpoints),
                "fresh_from": args.fresh_from,
                "results": {name: result.to_dict() for name, result in results.items()},
                "hardware": hardware(),
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
