"""Random-subspace ablation: fail-closed's plan when ``subspace_share`` is set (docs/method.md §3).

DeepRefusal ablates one direction at random sites and positions; here each harmful example is trained,
with probability ``share``, with a random subspace of the span of the found directions (and of a few fresh
candidates) ablated instead of the whole span. A subspace of dimension ``m`` (drawn uniformly from 1 to the
span's dimension ``k``) is spanned by ``m`` random unit combinations ``B g / ‖B g‖`` of an orthonormal basis
``B`` of the span, with Gaussian weights ``g``: so the model cannot learn to refuse through whatever the
found directions leave exactly, only through what survives every direction of their span.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate
from mechrefusal.train.loop import Groups, split_rows


def span_basis(directions: Sequence[Direction]) -> Float[Tensor, "d_model k"]:
    """An orthonormal basis of the span of ``directions`` (of their unit vectors, so that a long DIM vector
    does not swamp a short one)."""
    return DirectionSet([Direction(d.unit, d.layer, d.position, d.method) for d in directions]).basis()


def random_subspace(basis: Float[Tensor, "d_model k"], generator: torch.Generator, layer: int = 0) -> DirectionSet:
    """``m`` random unit combinations of the basis' columns, ``m`` uniform in 1..k (their span: a random
    subspace of the basis' span)."""
    k = basis.shape[1]
    m = int(torch.randint(1, k + 1, (), generator=generator))
    vectors = basis @ torch.randn(k, m, generator=generator)
    units = torch.nn.functional.normalize(vectors.T, dim=-1)
    return DirectionSet([Direction(unit, layer, -1, "subspace") for unit in units])


class SubspacePlan:
    """Each harmful example plain with probability ``plain_share``; otherwise under a random subspace of
    the span of ``directions`` and ``candidates`` with probability ``share``, else under the whole span of
    ``directions`` (the published ablation). Each subspace example is a group of its own."""

    def __init__(
        self,
        directions: DirectionSet,
        candidates: Sequence[Direction],
        *,
        share: float,
        plain_share: float,
        generator: torch.Generator,
    ) -> None:
        self.whole = Ablate(directions)
        self.basis = span_basis([*directions, *candidates])
        self.layer = directions[0].layer
        self.share, self.plain_share, self.generator = share, plain_share, generator

    def __call__(self, step: int, n: int) -> Groups:
        plain, sub, whole = split_rows(n, self.plain_share, self.share, self.generator)
        subspaces = [([i], Ablate(random_subspace(self.basis, self.generator, self.layer))) for i in sub]
        return [(whole, self.whole), (plain, None), *subspaces]
