"""`python -m mechrefusal.train --method {sft,fail-closed,refat,deeprefusal} [MODEL] --out DIR`."""

from __future__ import annotations

import argparse

from mechrefusal.cli import add_settings_arguments
from mechrefusal.train.job import run
from mechrefusal.train.settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechrefusal.train", description=__doc__)
    add_settings_arguments(parser, TrainSettings, positional=None)
    settings = TrainSettings(**vars(parser.parse_args(argv)))
    for directory in run(settings):
        print(f"wrote {directory}")


if __name__ == "__main__":
    main()
