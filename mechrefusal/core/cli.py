"""Command-line flags generated from a settings dataclass, so each setting is documented once."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields


def add_settings_arguments(
    parser: argparse.ArgumentParser, settings_class: type, positional: str | None = "model"
) -> None:
    """One flag per field (``--n-test``), booleans as switches; ``positional`` becomes an optional argument."""
    for field in fields(settings_class):
        help_text = field_doc(settings_class, field.name)
        if field.name == positional:
            parser.add_argument(field.name, nargs="?", default=field.default, help=help_text)
        elif isinstance(field.default, bool):
            parser.add_argument(f"--{field.name.replace('_', '-')}", action="store_true", help=help_text)
        else:
            kind = str if field.default is None else type(field.default)
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default, help=help_text)


def field_doc(settings_class: type, name: str) -> str:
    """The docstring written under a dataclass field."""
    source = inspect.getsource(settings_class).splitlines()
    for i, line in enumerate(source):
        if line.strip().startswith(f"{name}:"):
            doc = []
            for following in source[i + 1 :]:
                doc.append(following.strip().strip('"'))
                if following.rstrip().endswith('"""'):
                    break
            return " ".join(doc)
    return ""
