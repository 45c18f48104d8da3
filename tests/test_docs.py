"""The documentation matches the code, and nothing in the repository refers to files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Private notes outside the repository. The names are split so that this file does not match itself.
OUTSIDE = [".." + "/shared", "METHOD" + ".md", "DESIGN" + ".md", "ATTACKS" + ".md"]
OUTSIDE_PATTERN = re.compile("|".join(re.escape(name) for name in OUTSIDE))


def module_files() -> set[str]:
    package = ROOT / "mechrefusal"
    return {path.relative_to(ROOT).as_posix() for path in package.rglob("*.py") if "__pycache__" not in path.parts}


def table_modules() -> set[str]:
    """The module paths named in the first column of the module table of docs/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(mechrefusal/[^`]+\.py)` \|", section, flags=re.MULTILINE))


def test_every_module_is_in_the_architecture_table():
    missing = module_files() - table_modules()
    assert not missing, f"docs/architecture.md's module table lacks a row for: {sorted(missing)}"


def test_the_architecture_table_names_only_existing_modules():
    stale = table_modules() - module_files()
    assert not stale, f"docs/architecture.md's module table names files that do not exist: {sorted(stale)}"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" in head:  # binary
            continue
        files.append(path)
    return files


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_PATTERN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "references to files outside the repository:\n" + "\n".join(offenders)
