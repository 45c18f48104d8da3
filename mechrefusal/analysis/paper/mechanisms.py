"""The paper's mechanistic figures: the fail-open motivation, the cosines of the directions found round after
round, refusal under ablation (round 0 against the last round), representational independence, and which
directions each attack's prompts suppress."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechrefusal.analysis import plots
from mechrefusal.analysis.paper.output import SUBPLOT_MARGIN, PaperFigure
from mechrefusal.analysis.projections import projections
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.models import Model

JAILBREAK = "#8e44ad"
KIND_COLOURS = {
    "none": "#7f8c8d",
    "single": plots.HARMFUL,
    "pair": "#e67e22",
    "cumulative": "#16a085",
    "all": "#2c3e50",
}
PALETTE = ("#8e44ad", "#e67e22", "#16a085", "#2c3e50", "#d35400", "#7f8c8d")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def fail_open(
    model: Model,
    direction: Direction,
    harmful: Sequence[str],
    jailbreak: Sequence[str],
    harmless: Sequence[str],
    refusal: dict[str, float],
    *,
    batch_size: int = 16,
    dtype: str = "float32",
) -> PaperFigure:
    """Per-layer mean projection of plain harmful, jailbreak-wrapped harmful and harmless prompts on the unit
    ``direction`` (the residual stream entering each layer at the direction's position), beside the judged
    harmful refusal rate with nothing and with the direction ablated (``refusal``: ``{"none": rate,
    "ablated": rate}``, e.g. from an analysis report); forward passes in ``dtype`` (`projections`)."""
    if set(refusal) != {"none", "ablated"}:
        raise SettingError(f"refusal needs the rates 'none' and 'ablated', got {sorted(refusal)}.")
    per_layer = DirectionSet(
        [Direction(direction.vector, layer, direction.position, direction.method) for layer in range(model.n_layers)]
    )
    groups = {"harmful": harmful, "jailbreak (human template)": jailbreak, "harmless": harmless}
    means = {
        name: projections(model, prompts, per_layer, batch_size=batch_size, dtype=dtype).mean(dim=0).tolist()
        for name, prompts in groups.items()
    }
    figure = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.68, 0.32],
        subplot_titles=("Projection on the refusal direction", "Judged harmful refusal"),
        horizontal_spacing=0.12,
    )
    for (name, values), colour in zip(means.items(), (plots.HARMFUL, JAILBREAK, plots.HARMLESS)):
        figure.add_trace(
            go.Scatter(x=list(range(model.n_layers)), y=values, name=name, mode="lines+markers", line_color=colour),
            row=1,
            col=1,
        )
    figure.add_vline(x=direction.layer, line_dash="dot", line_color="grey", row=1, col=1)
    figure.add_trace(
        go.Bar(
            x=["nothing ablated", "direction ablated"],
            y=[refusal["none"], refusal["ablated"]],
            marker_color=plots.HARMFUL,
            texttemplate="%{y:.0%}",
            textposition="outside",
            showlegend=False,
            name="refusal rate",
        ),
        row=1,
        col=2,
    )
    figure.update_xaxes(title="layer", row=1, col=1)
    figure.update_yaxes(title="mean projection (residual units)", row=1, col=1)
    figure.update_yaxes(
        title="judged refusal rate", range=[0, 1.12], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%", row=1, col=2
    )
    plots.layout(
        figure,
        "Fail-open: one direction carries refusal",
        margin=SUBPLOT_MARGIN,
        height=420,
        legend=dict(orientation="h", y=-0.25),
    )
    at = direction.layer
    numbers = {
        "direction_layer": at,
        "mean_projection_at_direction_layer": {name: values[at] for name, values in means.items()},
        "per_layer_mean_projection": means,
        "refusal": dict(refusal),
        "prompts": {name: len(prompts) for name, prompts in groups.items()},
    }
    caption = (
        f"Mean projection of {len(harmful)} harmful, {len(jailbreak)} jailbreak-wrapped harmful and {len(harmless)} "
        f"harmless prompts on the refusal direction (found at layer {at}) entering each layer; at layer {at}: "
        + ", ".join(f"{name} {values[at]:.2f}" for name, values in means.items())
        + f". Ablating that one direction takes judged harmful refusal from {refusal['none']:.0%} to "
        f"{refusal['ablated']:.0%}."
    )
    return PaperFigure(figure, caption, numbers)


def direction_cosines(directions: DirectionSet, rounds: Sequence[dict[str, Any]]) -> PaperFigure:
    """Cosine matrix of a run's directions, each labelled with the round whose search found it (from the
    rounds' metadata, ``metrics.direction_found``, and ``metrics.unconditioned_search.added`` for the
    unconditioned directions that ``fresh_unconditioned`` adds after a round's conditioned one)."""
    if not len(directions):
        raise SettingError("The run's last round holds no direction; nothing to compare.")
    found = [
        (meta["round"], kind)
        for meta in rounds
        for kind, added in (
            ("", meta["metrics"]["direction_found"]),
            (", unconditioned", (meta["metrics"].get("unconditioned_search") or {}).get("added")),
        )
        if added
    ]
    if len(found) != len(directions):
        raise SettingError(
            f"The rounds report {len(found)} directions found but the last round holds {len(directions)}; "
            "pass the run directory the directions came from."
        )
    labels = [f"d{k} (round {r}{kind})" for k, (r, kind) in enumerate(found)]
    cosines = directions.cosines().tolist()
    figure = plots.cosine_heatmap(labels, cosines)
    figure.update_layout(title="Cosine similarity of the directions found round after round")
    off = [abs(cosines[i][j]) for i in range(len(labels)) for j in range(len(labels)) if i != j]
    numbers = {"labels": labels, "cosines": cosines, "max_abs_off_diagonal": max(off) if off else None}
    caption = (
        f"Cosine similarity of the {len(labels)} refusal directions found after rounds {[r for r, _ in found]}"
        + (f"; largest |cosine| between two of them {max(off):.2f}." if off else ".")
    )
    return PaperFigure(figure, caption, numbers)


def _kind(indices: Sequence[int], k: int) -> str | None:
    """``none``, ``single``, ``pair``, ``cumulative`` (the first j) or ``all``; ``None`` for other subsets."""
    n = len(indices)
    if n == 0:
        return "none"
    if n == k and k > 1:
        return "all"
    if n == 1:
        return "single"
    if n == 2:
        return "pair"
    return "cumulative" if list(indices) == list(range(n)) else None


def ablation_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One model entry's standard ablation configurations: label, kind, mean refusal score, judged rate."""
    ind = entry["independence"]
    k = len(ind["labels"])
    rows = []
    for configuration in ind["configurations"]:
        kind = _kind(configuration["indices"], k)
        if kind is not None:
            rows.append(
                {
                    "ablated": "+".join(configuration["ablated"]) or "none",
                    "kind": kind,
                    "mean_score": configuration["mean_score"],
                    "judged_rate": configuration["judged_rate"],
                }
            )
    return rows


def ablation_comparison(first: dict[str, Any], last: dict[str, Any]) -> PaperFigure:
    """Mean harmful refusal score under no, each single, each pair, cumulative and all ablations, for round 0
    (``first``) and the last round (``last``): two model entries of analysis reports. Judged refusal rates
    are written on the bars where measured."""
    panels = {"round 0": ablation_rows(first), "last round": ablation_rows(last)}
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=tuple(panels), horizontal_spacing=0.05)
    shown: set[str] = set()
    for col, rows in enumerate(panels.values(), start=1):
        for kind, colour in KIND_COLOURS.items():
            chosen = [row for row in rows if row["kind"] == kind]
            if chosen:
                figure.add_trace(
                    go.Bar(
                        x=[row["ablated"] for row in chosen],
                        y=[row["mean_score"] for row in chosen],
                        text=["" if row["judged_rate"] is None else f"{row['judged_rate']:.0%}" for row in chosen],
                        textposition="outside",
                        marker_color=colour,
                        name=kind,
                        legendgroup=kind,
                        showlegend=kind not in shown,
                    ),
                    row=1,
                    col=col,
                )
                shown.add(kind)
        figure.update_xaxes(title="ablated directions", row=1, col=col)
    figure.add_hline(y=0, line_dash="dash", line_color="grey")
    figure.update_yaxes(title="mean refusal score (log-odds)", row=1, col=1)
    plots.layout(
        figure,
        "Refusal under ablation: round 0 against the last round",
        margin=SUBPLOT_MARGIN,
        height=420,
        legend=dict(orientation="h", y=-0.3),
    )

    def lowest_single(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return min((row for row in rows if row["kind"] == "single"), key=lambda row: row["mean_score"])

    numbers = {
        name: {
            "configurations": rows,
            "none": rows[0]["mean_score"],
            "lowest_single": lowest_single(rows),
            "all": rows[-1]["mean_score"],
        }
        for name, rows in panels.items()
    }
    caption = (
        "Mean refusal score (log-odds of a refusal opener; positive: about to refuse) of held-out harmful prompts "
        "with no, each single, each pair, the first j and all directions ablated; percentages: judged refusal "
        "rates where measured. "
        + "; ".join(
            f"{name}: {entry['none']:+.2f} with nothing ablated, {entry['lowest_single']['mean_score']:+.2f} with "
            f"{entry['lowest_single']['ablated']} alone, {entry['all']:+.2f} with all"
            for name, entry in numbers.items()
        )
        + "."
    )
    return PaperFigure(figure, caption, numbers)


def independence(entry: dict[str, Any]) -> PaperFigure:
    """The representational-independence matrix of one model entry: |Δcos| of each direction's read
    (column) when another (row) is ablated, averaged over layers."""
    ind = entry["independence"]
    labels, shifts = ind["labels"], ind["shifts"]
    figure = plots.shift_heatmap(labels, shifts)
    off = [(shifts[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if i != j]
    largest = max(off) if off else None
    numbers = {
        "labels": labels,
        "shifts": shifts,
        "layers": ind["shift_layers"],
        "largest_off_diagonal": None
        if largest is None
        else {"shift": largest[0], "ablated": largest[1], "read": largest[2]},
    }
    caption = (
        f"Representational independence of {entry['model']}'s directions: mean over layers {ind['shift_layers']} "
        "of |Δcos| between the residual stream and the column direction when the row direction is ablated"
        + (
            f"; largest off-diagonal shift {largest[0]:.3f} ({largest[1]} ablated, {largest[2]} read)."
            if largest
            else "."
        )
    )
    return PaperFigure(figure, caption, numbers)


def attack_projections(
    model: Model,
    directions: DirectionSet,
    prompts: dict[str, Sequence[str]],
    labels: Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    dtype: str = "float32",
) -> PaperFigure:
    """Projections of each attack's prompts on each direction (at its own layer and position) against the
    plain harmful prompts (``prompts["plain"]``; the other keys are attacks, as from `attack_prompts`);
    forward passes in ``dtype`` (`projections`)."""
    if "plain" not in prompts or len(prompts) < 2:
        raise SettingError("attack_projections needs the plain harmful prompts ('plain') and at least one attack's.")
    if not len(directions):
        raise SettingError("attack_projections needs at least one direction.")
    labels = list(labels) if labels is not None else [f"d{k}" for k in range(len(directions))]
    values = {
        name: projections(model, list(texts), directions, batch_size=batch_size, dtype=dtype).T.tolist()
        for name, texts in prompts.items()
    }
    figure = go.Figure()
    for (name, columns), colour in zip(values.items(), itertools.chain([plots.HARMFUL], itertools.cycle(PALETTE))):
        figure.add_trace(
            go.Box(
                x=[label for label, column in zip(labels, columns) for _ in column],
                y=[v for column in columns for v in column],
                name="plain harmful" if name == "plain" else name,
                marker_color=colour,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
            )
        )
    figure.update_layout(boxmode="group")
    figure.update_xaxes(title="direction")
    figure.update_yaxes(title="projection on unit direction (residual units)")
    plots.layout(figure, "Attack prompts projected on each direction", legend=dict(orientation="h", y=-0.25))
    means = {name: dict(zip(labels, map(_mean, columns))) for name, columns in values.items()}
    ratio = {
        name: {label: row[label] / means["plain"][label] if means["plain"][label] else None for label in labels}
        for name, row in means.items()
        if name != "plain"
    }
    caption = (
        f"Projections of each attack's prompts and of the {len(prompts['plain'])} plain harmful prompts on the "
        "directions; mean projection relative to the plain prompts' (below 1: the attack suppresses that "
        "direction): "
        + "; ".join(
            f"{name} " + ", ".join(f"{label} {r:.2f}" if r is not None else f"{label} –" for label, r in row.items())
            for name, row in ratio.items()
        )
        + "."
    )
    return PaperFigure(figure, caption, {"mean_projection": means, "relative_to_plain": ratio})
