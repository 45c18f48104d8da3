"""`Record`: one instruction with its label (harm category or topic) and source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    instruction: str
    label: str = ""
    source: str = ""
