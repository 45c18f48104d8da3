"""`python -m mechrefusal.train [--config run.toml] --method {sft,fail-closed,refat,deeprefusal} --out DIR`."""

from __future__ import annotations

from mechrefusal.core.cli import SettingsParser, add_settings_arguments, parse_settings
from mechrefusal.core.errors import MechrefusalError
from mechrefusal.train.job import run
from mechrefusal.train.settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(prog="python -m mechrefusal.train", description=__doc__)
    add_settings_arguments(parser, TrainSettings, positional=None)
    settings = parse_settings(parser, TrainSettings, argv)
    try:
        written = run(settings)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))
    for directory in written:
        print(f"wrote {directory}")


if __name__ == "__main__":
    main()
