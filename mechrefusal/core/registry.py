"""`Registry`: the extension points (direction finders, training methods, judges, attacks) by name.

Each extension point is a protocol plus one registry of the classes that implement it. A job's setting
names an entry (``"rdo"``) or any importable class (``"my_package.my_module:MyFinder"``), so a new one
needs one file and no change to the jobs. An implementation's module registers it with the decorator
(finders, judges); the built-in training methods are given as ``module:Class`` strings, imported on first
use, because the methods' settings type imports the registry. The attack issue's registry is one more
instance of this class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from mechrefusal.core.errors import SettingError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of the implementations of one extension point (``kind``, e.g. "direction finder")."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = dict(builtins or {})

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a class (or factory) under ``name``."""

        def add(entry: T) -> T:
            self._entries[name] = entry
            return entry

        return add

    def get(self, spec: str) -> T:
        """The entry registered as ``spec``, or the object ``spec`` names as ``"package.module:Attribute"``."""
        entry = self._entries.get(spec, spec)
        if not isinstance(entry, str):
            return entry
        if ":" not in entry:
            raise SettingError(
                f"Unknown {self.kind} {spec!r}; choose one of {', '.join(self.names())} or pass 'module:Class'."
            )
        module, _, attribute = entry.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise SettingError(f"Cannot import the {self.kind} {spec!r} ({error}).") from None

    def names(self) -> tuple[str, ...]:
        """The registered names (the CLI's choices)."""
        return tuple(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"
