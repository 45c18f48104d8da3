"""Load a script of ``analyses/`` (not a package) as a module, to call its ``main`` in a test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ANALYSES = Path(__file__).parents[1] / "analyses"


def analysis_script(name: str) -> ModuleType:
    """``analyses/<name>.py`` imported as a fresh module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, ANALYSES / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"no analyses/{name}.py"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
