"""`Direction` and `DirectionSet`: vectors in the residual stream with the provenance to reproduce them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from mechrefusal.core.cache import atomic_write_bytes
from mechrefusal.core.errors import ArgumentTypeError, DataError, MissingFileError, SettingError
from mechrefusal.core.reprs import short_list

SAVED_FILE = "directions.safetensors"
"""The file beside a model's weights holding its saved directions (a trainer checkpoint's, an orthogonalised
model's), which `mechrefusal.load` reads."""


@dataclass
class Direction:
    """A residual-stream direction.

    Attributes:
        vector: the raw vector (for DIM, the unnormalised difference in means: its norm is the size of
            the activation addition).
        layer: the block whose input it was read at (``blocks.{layer}.hook_in``).
        position: the post-instruction position it was read at, counted from the end (-1 = last token).
        method: how it was found (``"dim"``, ``"rdo"``, ``"random"``, ...).
        provenance: model, data, versions, scores: whatever reproduces it (JSON-serialisable).

    The vector is kept on the CPU whatever device it was found on.
    """

    vector: Float[Tensor, " d_model"]
    layer: int
    position: int
    method: str
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, Tensor) or self.vector.ndim != 1:
            shape = tuple(self.vector.shape) if isinstance(self.vector, Tensor) else type(self.vector).__name__
            raise SettingError(f"A Direction's vector must be a 1-D tensor of width d_model, got {shape}.")
        if self.layer < 0:
            raise SettingError(f"A Direction's layer counts blocks from 0, got {self.layer}.")
        if self.vector.device.type != "cpu":  # directions live on the CPU, so sets found on any device stack;
            self.vector = self.vector.cpu()  # interventions move their bases to the model's device

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        return self.vector / self.vector.norm()

    @property
    def d_model(self) -> int:
        return self.vector.shape[0]

    def save(self, path: str | Path) -> None:
        """Write it as a one-direction set (see :meth:`DirectionSet.save`)."""
        DirectionSet([self]).save(path)

    @classmethod
    def load(cls, path: str | Path, *, d_model: int | None = None) -> Direction:
        """Read a file written by :meth:`save`; a file of several directions needs ``DirectionSet.load``."""
        directions = DirectionSet.load(path, d_model=d_model)
        if len(directions) != 1:
            raise DataError(f"{path} holds {len(directions)} directions, not one: read it with DirectionSet.load.")
        return directions[0]

    def __repr__(self) -> str:
        return (
            f"Direction(method={self.method!r}, layer={self.layer}, position={self.position}, "
            f"norm={self.vector.norm().item():.3g}, d_model={self.d_model})"
        )


class DirectionSet(Sequence[Direction]):
    """An ordered set of directions of one width, saved as safetensors with JSON provenance."""

    def __init__(self, directions: Sequence[Direction] = ()) -> None:
        self._directions = list(directions)
        widths = {direction.d_model for direction in self._directions}
        if len(widths) > 1:
            raise SettingError(f"A DirectionSet holds directions of one width, got widths {sorted(widths)}.")

    def __getitem__(self, index):
        return DirectionSet(self._directions[index]) if isinstance(index, slice) else self._directions[index]

    def __len__(self) -> int:
        return len(self._directions)

    def __iter__(self) -> Iterator[Direction]:
        return iter(self._directions)

    def __repr__(self) -> str:
        if not self._directions:
            return "DirectionSet(k=0)"
        where = short_list([f"{d.method}@{d.layer}/{d.position}" for d in self._directions])
        return f"DirectionSet(k={len(self)}, d_model={self._directions[0].d_model}, method@layer/position: {where})"

    def append(self, direction: Direction) -> None:
        if self._directions and direction.d_model != self._directions[0].d_model:
            raise SettingError(
                f"Cannot add a direction of width {direction.d_model} to a set of width {self._directions[0].d_model}."
            )
        self._directions.append(direction)

    @property
    def matrix(self) -> Float[Tensor, "k d_model"]:
        if not self._directions:
            raise SettingError("This DirectionSet is empty: it has no vectors, basis or cosines.")
        return torch.stack([direction.vector for direction in self._directions])

    def basis(self) -> Float[Tensor, "d_model k"]:
        """An orthonormal basis of the span (QR in float32); rank-deficient sets give fewer columns."""
        q, r = torch.linalg.qr(self.matrix.float().T)
        keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max()
        return q[:, keep]

    def cosines(self) -> Float[Tensor, "k k"]:
        """Pairwise cosine similarities."""
        units = torch.nn.functional.normalize(self.matrix.float(), dim=-1)
        return units @ units.T

    def check_width(self, d_model: int, what: str = "the model") -> None:
        if self._directions and self._directions[0].d_model != d_model:
            raise SettingError(
                f"These directions have width {self._directions[0].d_model} but {what} has "
                f"d_model {d_model}: they were found on another model."
            )

    def save(self, path: str | Path) -> None:
        """Write vectors and provenance to one ``.safetensors`` file (provenance as JSON metadata)."""
        tensors = {f"direction.{i}": d.vector.detach().cpu().contiguous() for i, d in enumerate(self)}
        meta = [
            {"layer": d.layer, "position": d.position, "method": d.method, "provenance": d.provenance} for d in self
        ]
        atomic_write_bytes(Path(path), save(tensors, metadata={"mechrefusal.directions": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | Path, *, d_model: int | None = None) -> DirectionSet:
        """Read a set written by :meth:`save`; ``d_model`` checks the width against a model's."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"No direction file at {path}.")
        try:
            with safe_open(str(path), "pt") as handle:
                meta = json.loads((handle.metadata() or {})["mechrefusal.directions"])
            tensors = load_file(str(path))
        except (KeyError, ValueError, OSError, SafetensorError) as error:
            raise DataError(f"{path} is not a mechrefusal direction file ({error}).") from error
        directions = cls(
            [
                Direction(
                    tensors[f"direction.{i}"], item["layer"], item["position"], item["method"], item["provenance"]
                )
                for i, item in enumerate(meta)
            ]
        )
        if d_model is not None:
            directions.check_width(d_model)
        return directions


def as_direction_set(directions: Direction | DirectionSet | Sequence[Direction]) -> DirectionSet:
    """Accept one direction, a set, or a list of directions."""
    if isinstance(directions, Direction):
        return DirectionSet([directions])
    if isinstance(directions, DirectionSet):
        return directions
    if isinstance(directions, Sequence) and directions and all(isinstance(d, Direction) for d in directions):
        return DirectionSet(directions)
    raise ArgumentTypeError(
        f"Expected a Direction, a DirectionSet or a non-empty list of Directions, got {directions!r}."
    )
