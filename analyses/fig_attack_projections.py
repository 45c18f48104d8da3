"""Which directions a jailbreak suppresses: projections of each attack's prompts on each of a checkpoint's
directions, against the plain harmful prompts they were made from.

    python analyses/fig_attack_projections.py CKPT ATTACKS [--out figures]

CKPT is a training round (its saved directions are projected on); ATTACKS the ``--out`` of
``python -m mechrefusal.attack`` (on any model: only its prompts are used).
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import attack_projections
from mechrefusal.analysis.paper.inputs import attack_prompts, read_attacks
from mechrefusal.analysis.paper.output import add_compute_arguments, figure_main
from mechrefusal.core.errors import SettingError
from mechrefusal.models import load


def build(args: argparse.Namespace):
    prompts = attack_prompts(read_attacks(args.attacks))
    model = load(args.checkpoint, device=args.device)
    if not model.directions:
        raise SettingError(f"{args.checkpoint} holds no saved directions; pass a training round directory.")
    return attack_projections(model, model.directions, prompts, dtype=args.dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training round directory (RUN/round-K)")
    parser.add_argument("attacks", help="a python -m mechrefusal.attack --out directory")
    add_compute_arguments(parser)
    figure_main("attack_projections", parser, build, argv)


if __name__ == "__main__":
    main()
