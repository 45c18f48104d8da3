"""One error family: every deliberate raise in the package uses `mechrefusal.core.errors`, and
``docs/errors.md`` documents each of its classes with a cause, a fix and a message the code raises."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import pytest

import mechrefusal
from mechrefusal.core import errors

ROOT = Path(__file__).resolve().parent.parent
FAMILY = {name for name, value in vars(errors).items() if inspect.isclass(value) and issubclass(value, Exception)}
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if inspect.isclass(value) and issubclass(value, BaseException)
}
# builtins whose protocol demands them: a module's __getattr__ raises AttributeError
ALLOWED = {("AttributeError", "__getattr__"), ("NotImplementedError", None)}


def _raises() -> list[tuple[Path, ast.Raise, str | None]]:
    """Every ``raise`` of an exception in the package, with the name of the function it is in."""

    def walk(path: Path, node: ast.AST, function: str | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Raise) and child.exc is not None:
                yield path, child, function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield from walk(path, child, inner)

    return [
        found
        for path in sorted((ROOT / "mechrefusal").rglob("*.py"))
        for found in walk(path, ast.parse(path.read_text()), None)
    ]


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    if isinstance(exc, ast.Attribute):
        return exc.attr
    return exc.id if isinstance(exc, ast.Name) else None


def _message_pattern(node: ast.Raise) -> re.Pattern | None:
    """The raised message as a regex (each ``{...}`` of an f-string matches any text), if it is literal."""
    if not isinstance(node.exc, ast.Call) or not node.exc.args:
        return None
    message = node.exc.args[0]
    if isinstance(message, ast.Constant) and isinstance(message.value, str):
        return re.compile(re.escape(message.value))
    if isinstance(message, ast.JoinedStr):
        parts = [re.escape(p.value) if isinstance(p, ast.Constant) else ".+" for p in message.values]
        return re.compile("".join(parts), re.DOTALL)
    return None


def test_every_deliberate_raise_uses_the_family():
    stray = []
    for path, node, function in _raises():
        name = _raised_name(node)
        if name in FAMILY or (name, function) in ALLOWED or (name, None) in ALLOWED:
            continue
        if isinstance(node.exc, ast.Name) and name not in BUILTIN_EXCEPTIONS:
            continue  # re-raise of a caught exception
        stray.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {name}")
    assert not stray, "\n".join(stray)


def test_the_scan_sees_the_raises():
    counts = {}
    for _, node, _ in _raises():
        counts[_raised_name(node)] = counts.get(_raised_name(node), 0) + 1
    assert counts.get("SettingError", 0) > 30 and counts.get("DataError", 0) > 5


def test_argument_errors_are_also_the_builtins_callers_expect():
    assert issubclass(errors.SettingError, ValueError) and issubclass(errors.DeviceError, ValueError)
    assert issubclass(errors.ArgumentTypeError, TypeError) and issubclass(errors.ArgumentTypeError, ValueError)
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert all(issubclass(getattr(errors, name), errors.MechrefusalError) for name in FAMILY)


def test_the_package_exports_every_error():
    for name in FAMILY:
        assert getattr(mechrefusal, name) is getattr(errors, name)
        assert name in mechrefusal.__all__


def test_a_missing_file_is_one_error_everywhere(tmp_path):
    missing = tmp_path / "nothing-here"
    for call in (
        lambda: mechrefusal.DirectionSet.load(missing),
        lambda: mechrefusal.data.load_file(missing),
        lambda: mechrefusal.load(str(missing)),
    ):
        with pytest.raises(errors.MissingFileError, match="nothing-here"):
            call()


def _sections() -> dict[str, str]:
    text = (ROOT / "docs" / "errors.md").read_text()
    parts = re.split(r"^## (\w+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_docs_list_every_error_with_cause_fix_and_a_real_message():
    sections = _sections()
    assert set(sections) == FAMILY
    patterns: dict[str, list[re.Pattern]] = {}
    for _, node, _ in _raises():
        pattern = _message_pattern(node)
        if pattern is not None and _raised_name(node) in FAMILY:
            patterns.setdefault(_raised_name(node), []).append(pattern)
    for name, section in sections.items():
        assert "**Usual cause:**" in section and "**Fix:**" in section, name
        examples = [line[2:].strip() for line in section.splitlines() if line.startswith("> ")]
        assert examples, f"{name} has no example message"
        # the base class is never raised itself: its example may come from any member
        candidates = [p for ps in patterns.values() for p in ps] if name == "MechrefusalError" else patterns[name]
        for example in examples:
            assert any(p.fullmatch(example) for p in candidates), f"{name}: {example!r} is not a message it raises"
