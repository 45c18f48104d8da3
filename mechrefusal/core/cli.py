"""Command-line flags and TOML files generated from a settings dataclass, so each setting is documented once.

A field whose type is itself a settings dataclass (``rdo: RDOSettings``) is a group: its fields become
``--rdo-lr``-style flags and a ``[rdo]`` table in a TOML file. Booleans are ``--x / --no-x`` switches, a
field made with `choice` lists its values, and ``--config run.toml`` reads a file that the flags given
override. `write_settings` writes the file that replays a settings object exactly.
"""

from __future__ import annotations

import argparse
import inspect
import tomllib
import types
from collections.abc import Sequence
from dataclasses import Field, asdict, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints

import tomli_w

from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.core.registry import Registry

SETTINGS_FILE = "settings.toml"
"""Name of the file a checkpoint or report directory replays its run from (``--config DIR/settings.toml``)."""
T = TypeVar("T")


def choice(default: str, choices: Sequence[str], *, aliases: Sequence[str] = ()) -> Any:
    """A dataclass field that takes one of ``choices`` (listed by ``--help``, checked by the parser)."""
    return field(default=default, metadata={"choices": tuple(choices), "aliases": tuple(aliases)})


def registered(default: str, registry: Registry) -> Any:
    """A dataclass field naming an entry of ``registry`` or a ``package.module:Class`` (its names are listed
    by ``--help``; the settings check the value, so an unknown one is one line too)."""
    return field(default=default, metadata={"registry": registry})


def aliased(default: Any, *aliases: str) -> Any:
    """A dataclass field also reachable by older flag names (``--max-kl`` for ``--search-max-kl``)."""
    return field(default=default, metadata={"aliases": aliases})


class SettingsParser(argparse.ArgumentParser):
    """An argument parser whose every error is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of a command that loads a model."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")


def add_settings_arguments(
    parser: argparse.ArgumentParser, settings_class: type, positional: str | None = "model"
) -> None:
    """``--config FILE`` and one flag per field (``--n-test``, ``--rdo-lr``); ``positional`` becomes an
    optional argument. Parsed flags hold only what was given: `parse_settings` fills in the rest."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML file of settings (a run's {SETTINGS_FILE} replays it); flags given override it",
    )
    _add_group(parser, settings_class, "", positional)


def _add_group(parser: argparse.ArgumentParser, settings_class: Any, prefix: str, positional: str | None) -> None:
    hints = get_type_hints(settings_class)
    target = parser.add_argument_group(f"{prefix[:-1]} settings", _summary(settings_class)) if prefix else parser
    for f in fields(settings_class):
        kind = _value_type(hints[f.name])
        dest = prefix + f.name
        if is_dataclass(kind):
            _add_group(parser, kind, dest + ".", None)
            continue
        default = _default(f)
        shown = "" if default is None or kind is bool else f" (default: {default})"
        help_text = (field_doc(settings_class, f.name) + shown).replace("%", "%%")
        if f.name == positional and not prefix:
            target.add_argument(dest, nargs="?", default=argparse.SUPPRESS, help=help_text)
            continue
        names = [f"--{dest.replace('.', '-').replace('_', '-')}", *f.metadata.get("aliases", ())]
        if kind is bool:
            target.add_argument(
                *names, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            target.add_argument(
                *names,
                dest=dest,
                type=kind,
                choices=f.metadata.get("choices"),
                metavar=_metavar(f),
                default=argparse.SUPPRESS,
                help=help_text,
            )


def _metavar(f: Field) -> str | None:
    if "choices" in f.metadata:
        return None
    if "registry" in f.metadata:
        return "{" + ",".join(f.metadata["registry"].names()) + "} or module:Class"
    return f.name.upper()


def parse_settings(parser: argparse.ArgumentParser, settings_class: type[T], argv: Sequence[str] | None = None) -> T:
    """The settings of a command line: defaults, then ``--config``'s file, then the flags given; any bad
    setting ends the program with one line from ``parser.error`` (exit status 2)."""
    given = vars(parser.parse_args(argv))
    try:
        values = read_settings_file(given.pop("config"), settings_class) if "config" in given else {}
        for dest, value in given.items():
            *groups, name = dest.split(".")
            table = values
            for group in groups:
                table = table.setdefault(group, {})
            table[name] = value
        return settings_from_dict(settings_class, values)
    except (MechrefusalError, ValueError) as error:
        parser.error(str(error))


def read_settings_file(path: str | Path, settings_class: type) -> dict:
    """The tables of a TOML settings file, checked against ``settings_class`` (unknown keys are errors)."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise SettingError(f"Cannot read the settings file {path}: {error.strerror or error}.") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingError(f"The settings file {path} is not valid TOML: {error}.") from None
    _check_keys(values, settings_class, "", f" in {path}")
    return values


def settings_from_dict(settings_class: Any, values: dict, *, where: str = "") -> Any:
    """``settings_class`` from (nested) plain values, as read from TOML or JSON; a missing key is its
    default, an unknown key or a value of the wrong type raises `SettingError`."""
    _check_keys(values, settings_class, where, "")
    hints = get_type_hints(settings_class)
    kwargs: dict[str, Any] = {}
    for f in fields(settings_class):
        if f.name not in values:
            continue
        kind, value, name = _value_type(hints[f.name]), values[f.name], _dotted(where, f.name)
        if value is None and f.default is None:
            kwargs[f.name] = None
        elif is_dataclass(kind):
            if not isinstance(value, dict):
                raise SettingError(f"Setting {name} is a table of settings, got {value!r}.")
            kwargs[f.name] = settings_from_dict(kind, value, where=name)
        else:
            kwargs[f.name] = _checked(value, kind, f, name)
    return settings_class(**kwargs)


def write_settings(settings: Any, path: str | Path) -> Path:
    """Write ``settings`` (a settings object or its `asdict`) as TOML that `read_settings_file` turns back
    into equal settings (``None`` is a default and is left out: TOML has no null)."""
    path = Path(path)
    path.write_text(tomli_w.dumps(_without_none(settings if isinstance(settings, dict) else asdict(settings))))
    return path


def flat_settings(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings values with dotted keys (``{"rdo.lr": 0.01}``), for comparing two runs."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


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


def _summary(settings_class: type) -> str:
    return (settings_class.__doc__ or "").strip().split("\n")[0]


def _value_type(hint: Any) -> Any:
    """``str`` for ``str | None``; other hints unchanged."""
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    return hint


def _default(f: Field) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_keys(values: dict, settings_class: type, where: str, source: str) -> None:
    """Raise `SettingError` for the first key (also in a group's table) that is not a setting."""
    hints = get_type_hints(settings_class)
    known = {f.name: _value_type(hints[f.name]) for f in fields(settings_class)}
    for key, value in values.items():
        if key not in known:
            raise SettingError(
                f"Unknown setting {_dotted(where, key)!r}{source}; valid ones{f' in [{where}]' if where else ''}: "
                f"{', '.join(known)}."
            )
        if is_dataclass(known[key]) and isinstance(value, dict):
            _check_keys(value, known[key], _dotted(where, key), source)


def _checked(value: Any, kind: type, f: Field, name: str) -> Any:
    """``value`` as a ``kind`` (an int is a float too), or a `SettingError` naming the setting."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingError(f"Setting {name} takes a {kind.__name__}, got {value!r}.")
    options = f.metadata.get("choices")
    if options and value not in options:
        raise SettingError(f"Setting {name} must be one of {', '.join(options)}; got {value!r}.")
    return value


def _without_none(values: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}
