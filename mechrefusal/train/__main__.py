"""`python -m mechrefusal.train --method {sft,fail-closed,refat,deeprefusal} [MODEL] --out DIR`."""

from __future__ import annotations

import argparse

from mechrefusal.core.cli import add_settings_arguments
from mechrefusal.core.errors import MechrefusalError
from mechrefusal.train.job import run
from mechrefusal.train.settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechrefusal.train", description=__doc__)
    add_settings_arguments(parser, TrainSettings, positional=None)
    try:
        settings = TrainSettings(**vars(parser.parse_args(argv)))
        written = run(settings)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))
    for directory in written:
        print(f"wrote {directory}")


if __name__ == "__main__":
    main()
