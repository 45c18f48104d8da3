"""Reading a user's own instruction files: JSONL, CSV or TXT, with errors naming file and line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mechrefusal.core.errors import DataError, MissingFileError
from mechrefusal.data.records import Record

# Keys / columns accepted for the instruction text, in order of preference.
TEXT_KEYS = ("instruction", "prompt", "goal", "behavior", "text", "request")
LABEL_KEYS = ("category", "label", "topic")


def read_records(path: str | Path) -> list[Record]:
    """Read instructions from ``.jsonl`` (objects or strings), ``.csv`` (header row) or ``.txt`` (lines)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"No instruction file at {path}.")
    readers = {".jsonl": _read_jsonl, ".csv": _read_csv, ".txt": _read_txt}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported extension {path.suffix!r}; use .jsonl, .csv or .txt.")
    records = reader(path, _utf8_text(path))
    if not records:
        raise DataError(f"{path} holds no instructions.")
    return records


def _utf8_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text ({error.reason}); save the file as UTF-8.") from None


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
        records.append(_record_from(item, path, number))
    return records


def _read_csv(path: Path, text: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames or not any(key in reader.fieldnames for key in TEXT_KEYS):
            raise DataError(
                f"{path}, line 1: the header {reader.fieldnames} has no instruction column; "
                f"name one of {', '.join(TEXT_KEYS)}."
            )
        return [_record_from(row, path, reader.line_num) for row in reader]
    except csv.Error as error:
        raise DataError(f"{path}, after line {reader.line_num}: not readable as CSV ({error}).") from None


def _read_txt(path: Path, text: str) -> list[Record]:
    return [Record(line.strip(), source=str(path)) for line in text.splitlines() if line.strip()]


def _record_from(item: object, path: Path, number: int) -> Record:
    if isinstance(item, str) and item.strip():
        return Record(item.strip(), source=str(path))
    if isinstance(item, dict):
        text = next((item[key] for key in TEXT_KEYS if isinstance(item.get(key), str)), "")
        label = next((item[key] for key in LABEL_KEYS if isinstance(item.get(key), str)), "")
        if text.strip():
            return Record(text.strip(), label=label, source=str(path))
    raise DataError(
        f"{path}, line {number}: expected a non-empty string or an object with one of the keys {', '.join(TEXT_KEYS)}."
    )
