"""The attribution search against the screen and the exact search (docs/results.md, direction search).

    python analyses/search_agreement.py [CKPT] [--toy] [--embedded] [--context] [--exact]

For each model, the trainer's DIM search sizes (64+64 train prompts, 16+16 val prompts, bf16): the cell
each search picks (attribution, screen, and with ``--exact`` the exact search), its exact bypass / induce
/ KL on the whole val sets, wall time, and which searches disagree with the attribution search. Also the
rank correlation of the attribution estimates (16+16 prompts) with the screen's scores (8+8 prompts) or,
with ``--exact``, the exact scores, for the two linearisations (``sites="writes"`` and ``"all"``).
Models: ``--toy`` (tests/toy.py), ``--embedded`` (untrained, default filters), ``CKPT`` (a trainer
checkpoint, its filters) and with ``--context`` that checkpoint searched as round 1 of fail-closed
training does: its first direction ablated and orthogonal to it. Run from the repository root with
``PYTHONPATH=.`` so that this tree's package is the one imported. Prints one JSON line with the
configuration, versions and results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import mechrefusal
from mechrefusal import Ablate, data
from mechrefusal.core.checkpoint_record import read_metadata
from mechrefusal.core.provenance import versions
from mechrefusal.directions import SelectionFilters, as_direction_set
from mechrefusal.directions.attribution import SITES, estimate_candidates
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.directions.selection import score_direction
from mechrefusal.models import autocast
from mechrefusal.train.search import N_SCORE, N_SEARCH
from mechrefusal.train.settings import saved_settings


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rank = lambda x: x.argsort().argsort().double()  # noqa: E731
    return torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1].item()


def compare(model, filters: SelectionFilters, exact: bool, context=None, orthogonal_to=None) -> dict:
    train = data.load("harmful", "train")[:N_SEARCH], data.load("harmless", "train")[:N_SEARCH]
    val = data.load("harmful", "val")[:N_SCORE], data.load("harmless", "val")[:N_SCORE]
    found, seconds = {}, {}
    for search in ("attribution", "screen", "exact") if exact else ("attribution", "screen"):
        started = time.perf_counter()
        found[search] = mechrefusal.find_direction(
            model,
            *train,
            harmful_val=val[0],
            harmless_val=val[1],
            filters=filters,
            search=search,
            context=context,
            orthogonal_to=orthogonal_to,
            progress=False,
        )
        seconds[search] = round(time.perf_counter() - started, 1)
    reference = "exact" if exact else "screen"
    grid = found[reference].provenance["scores"]

    def cell(direction) -> dict:
        with model.intervene(context), autocast(model, "bfloat16"):
            scores = score_direction(model, direction, *val)
        return {
            "layer": direction.layer,
            "position": direction.position,
            "passed": direction.provenance["passed_filters"],
            "screen_fallback": direction.provenance["scores"].get("screen_fallback", False),
            **{key: round(value, 4) for key, value in scores.items()},
        }

    cells = {search: cell(direction) for search, direction in found.items()}
    disagreements = [
        search
        for search in found
        if search != "attribution"
        and (cells[search]["layer"], cells[search]["position"])
        != (cells["attribution"]["layer"], cells["attribution"]["position"])
    ]
    kept = ~torch.tensor(grid["bypass"]).isnan()
    reference_bypass, reference_kl = torch.tensor(grid["bypass"])[kept], torch.tensor(grid["kl"])[kept]
    with model.intervene(context):
        candidates, _ = dim_candidates(model, *train, progress=False)
        if orthogonal_to is not None:
            q = as_direction_set(orthogonal_to).basis()
            candidates = candidates - (candidates @ q) @ q.T
        correlation = {}
        for sites in SITES:
            bypass, kl = estimate_candidates(model, candidates[kept], *val, sites=sites)
            correlation[sites] = {
                "spearman_bypass": round(spearman(bypass, reference_bypass), 3),
                "spearman_kl": round(spearman(kl, reference_kl), 3),
                "mean_abs_bypass_error": round((bypass - reference_bypass).abs().mean().item(), 3),
                "median_kl_ratio": round((kl / reference_kl).nanmedian().item(), 3),
            }
    return {
        "filters": vars(filters),
        "cells": cells,
        "disagree_with_attribution": disagreements,
        "seconds": seconds,
        "finalists": {search: found[search].provenance["finalists"] for search in found},
        "estimates_vs": reference,
        "estimates": correlation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="a trainer checkpoint directory, e.g. /work/runs/r0/round-0")
    parser.add_argument("--toy", action="store_true", help="the toy refusing model of the tests")
    parser.add_argument("--embedded", action="store_true", help="the untrained embedded model")
    parser.add_argument("--context", action="store_true", help="also the checkpoint with its first direction ablated")
    parser.add_argument("--exact", action="store_true", help="also the exact search (every cell scored; slow)")
    args = parser.parse_args()
    results = {}
    if args.toy:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.toy import train_toy_refuser

        results["toy"] = compare(train_toy_refuser(tempfile.mkdtemp()), SelectionFilters(max_kl=1.0), args.exact)
    if args.embedded:
        results["embedded"] = compare(mechrefusal.load(), SelectionFilters(), args.exact)
    if args.checkpoint:
        settings = saved_settings(read_metadata(args.checkpoint)["settings"])
        filters = SelectionFilters(max_kl=settings["search.max_kl"], min_induce=settings["search.min_induce"])
        model = mechrefusal.load(args.checkpoint)
        results["checkpoint"] = compare(model, filters, args.exact)
        if args.context:
            d0 = model.directions[0]
            results["checkpoint_d0_ablated"] = compare(model, filters, args.exact, context=Ablate(d0), orthogonal_to=d0)
    config = {
        "checkpoint": args.checkpoint,
        "n_search": N_SEARCH,
        "n_score": N_SCORE,
        "sweep_dtype": "bfloat16",
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps({"analysis": "search_agreement", "config": config, "results": results, "versions": versions()}))


if __name__ == "__main__":
    main()
