"""The RDO finder: Refusal Direction Optimisation anchored at the DIM direction's layer and norm."""

from __future__ import annotations

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.directions.dim_finder import DIMFinder, DIMSettings
from mechrefusal.directions.finder import FINDERS, DirectionSearch
from mechrefusal.directions.rdo import RDOSettings, rdo

SCORES = ("bypass", "induce", "kl", "passed_filters")


@FINDERS.register("rdo")
class RDOFinder:
    """RDO from a DIM anchor: ``dim`` if given, else the DIM finder's direction (searched as
    ``dim_settings`` say). ``independent_of`` adds the representational-independence penalty against those
    directions. With ``fallback``, an RDO direction that fails the filters while its anchor passes them gives way to
    the anchor, whose provenance keeps the rejected RDO scores under ``"rdo_rejected"``: RDO refines the
    anchor, it never makes a search find less."""

    def __init__(
        self,
        *,
        dim: Direction | None = None,
        independent_of: Direction | DirectionSet | None = None,
        rdo_settings: RDOSettings = RDOSettings(),
        fallback: bool = False,
        dim_settings: DIMSettings | None = None,
    ) -> None:
        self.anchor = DIMFinder(dim_settings=dim_settings)
        self.dim, self.independent_of, self.settings, self.fallback = dim, independent_of, rdo_settings, fallback

    def __call__(self, search: DirectionSearch) -> Direction:
        anchor = self.dim if self.dim is not None else self.anchor(search)
        refined = search.score(
            rdo(
                search.model,
                search.harmful,
                search.harmless,
                anchor,
                settings=self.settings,
                orthogonal_to=search.orthogonal_to,
                independent_of=self.independent_of,
                context=search.context,
                exclude_massive=self.anchor.settings.exclude_massive,
                batch_size=search.batch_size,
                progress=search.progress,
            )
        )
        if not self.fallback or refined.provenance["passed_filters"] or not anchor.provenance.get("passed_filters"):
            return refined
        anchor.provenance = {**anchor.provenance, "rdo_rejected": {key: refined.provenance[key] for key in SCORES}}
        return anchor

    def __repr__(self) -> str:
        return f"RDOFinder(anchor={'given' if self.dim is not None else self.anchor}, fallback={self.fallback})"
