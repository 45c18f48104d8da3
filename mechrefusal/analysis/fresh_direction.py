"""Why a fresh direction beats the saved ones (adaptive-attack issue, item 3): its geometry against the
saved directions and what ablating it does, read from an analysis report directory
(``python -m mechrefusal.analyze --out DIR``: ``report.json`` and ``ROLE_directions.safetensors``, the
given directions first and the fresh one last).

For each analysed model: the fresh direction's cosine with each saved direction; the length of its unit
vector's projection onto the span of the saved directions (which is also its cosine with that projection:
1 inside the span, 0 orthogonal to it) and the angle to the span; its layer and position against the saved
ones'; its single-ablation refusal against theirs (the report's independence results); and the separation
(Cohen's d) of held-out harmful from harmless prompts projected on each direction (the report's projections).
`fresh_parts` splits the fresh direction at the span, so that ablating each part alone shows which one
carries the refusal the saved directions miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.analysis.projections import cohens_d
from mechrefusal.analysis.report import ModelResult, Report
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import DataError, MissingFileError, SettingError


def span_parts(
    vector: Float[Tensor, " d_model"], directions: DirectionSet
) -> tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """``vector``'s unit vector split into its projection onto the span of ``directions`` and the rest."""
    unit = vector.float() / vector.float().norm().clamp_min(1e-12)
    basis = directions.basis()
    inside = basis @ (basis.T @ unit)
    return inside, unit - inside


def span_projection(vector: Float[Tensor, " d_model"], directions: DirectionSet) -> float:
    """Length of ``vector``'s unit vector projected onto the span of ``directions``: its cosine with that
    projection (1 inside the span, 0 orthogonal to it)."""
    return span_parts(vector, directions)[0].norm().clamp(max=1.0).item()


def fresh_parts(directions: DirectionSet) -> dict[str, Direction]:
    """The fresh direction (the last of ``directions``) split at the span of the others: its part inside
    the span and its part outside, each a direction at the fresh one's layer and position."""
    if len(directions) < 2:
        raise SettingError("Splitting the fresh direction needs it and at least one saved direction, got one.")
    fresh = directions[-1]
    inside, outside = span_parts(fresh.vector, directions[:-1])
    return {
        part: Direction(vector, fresh.layer, fresh.position, f"{fresh.method} {part}")
        for part, vector in (("inside span", inside), ("outside span", outside))
    }


@dataclass(frozen=True)
class DirectionGeometry:
    """One analysed direction of a model: where it was read, what ablating it left, how it separates."""

    label: str
    layer: int
    position: int
    single_refusal: float | None
    """Judged harmful refusal with this direction alone ablated."""
    separation: float
    """Cohen's d of held-out harmful against harmless prompts' projections on the direction."""
    cosine_with_fresh: float


@dataclass(frozen=True)
class FreshDiagnosis:
    """The fresh direction of one analysed model against its saved directions."""

    role: str
    model: str
    saved: tuple[DirectionGeometry, ...]
    fresh: DirectionGeometry
    span_projection: float | None
    """Length of the fresh unit vector's projection onto the saved directions' span (``None``: no saved ones)."""
    baseline_refusal: float | None
    saved_ablated_refusal: float | None
    """Refusal with all saved directions ablated together, where the report judged that set."""

    @property
    def angle_to_span(self) -> float | None:
        """Degrees between the fresh direction and the saved directions' span."""
        return None if self.span_projection is None else math.degrees(math.acos(self.span_projection))

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "model": self.model,
            "saved": [vars(row) for row in self.saved],
            "fresh": vars(self.fresh),
            "span_projection": self.span_projection,
            "angle_to_span_deg": self.angle_to_span,
            "baseline_refusal": self.baseline_refusal,
            "saved_ablated_refusal": self.saved_ablated_refusal,
        }


def diagnose(result: ModelResult, directions: DirectionSet) -> FreshDiagnosis:
    """The fresh direction (the last of ``directions``, labelled ``fresh`` in ``result``) against the others."""
    labels = [row.label for row in result.directions]
    if len(labels) != len(directions) or not labels or labels[-1] != "fresh":
        raise DataError(
            f"The {result.role} entry's directions {labels} do not end in one labelled 'fresh' matching its "
            f"{len(directions)} saved vectors: the report was not written by mechrefusal.analyze."
        )
    fresh_vector = directions[-1].vector.float()
    harmful, harmless = (torch.tensor(result.entry["projections"][name]) for name in ("harmful", "harmless"))

    def geometry(k: int, direction: Direction) -> DirectionGeometry:
        row = result.directions[k]
        cosine = torch.nn.functional.cosine_similarity(direction.vector.float(), fresh_vector, dim=0).item()
        return DirectionGeometry(
            row.label, row.layer, row.position, row.single_refusal, cohens_d(harmful[k], harmless[k]), cosine
        )

    rows = tuple(geometry(k, direction) for k, direction in enumerate(directions))
    saved = directions[:-1]
    configurations = result.entry["independence"]["configurations"]
    saved_labels = sorted(labels[:-1])
    saved_ablated = next((c["judged_rate"] for c in configurations if sorted(c["ablated"]) == saved_labels), None)
    return FreshDiagnosis(
        role=result.role,
        model=result.model,
        saved=rows[:-1],
        fresh=rows[-1],
        span_projection=span_projection(fresh_vector, saved) if len(saved) else None,
        baseline_refusal=result.summary.harmful_refusal,
        saved_ablated_refusal=saved_ablated if len(saved) else None,
    )


def diagnose_report(out: str | Path) -> list[FreshDiagnosis]:
    """`diagnose` for every model of the analysis report directory ``out``."""
    return [
        diagnose(result, DirectionSet.load(Path(out) / f"{result.role}_directions.safetensors"))
        for result in _report(out).models
    ]


def fresh_of(out: str | Path, spec: str) -> Direction:
    """The fresh direction the analysis report directory ``out`` found on the model ``spec``."""
    for result in _report(out).models:
        if Path(result.model).resolve() == Path(spec).resolve():
            return DirectionSet.load(Path(out) / f"{result.role}_directions.safetensors")[-1]
    raise DataError(f"The analysis report at {out} did not analyse {spec}; run mechrefusal.analyze on it first.")


def _report(out: str | Path) -> Report:
    if not (Path(out) / "report.json").is_file():
        raise MissingFileError(f"No analysis report at {out} (expected the --out DIR of mechrefusal.analyze).")
    return Report.load(out)
