"""Plotly figure builders for the analysis report and ``analyses/`` scripts.

Each builder takes plain numbers (lists, as stored in ``report.json``) and returns a
``plotly.graph_objects.Figure``, so a figure can be rebuilt from a saved report.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

HEIGHT = 360
HARMFUL, HARMLESS = "#c0392b", "#2471a3"


def layout(figure: go.Figure, title: str, **kwargs) -> go.Figure:
    """The shared style: white template, fixed height, room for axis titles."""
    figure.update_layout(
        **{
            "title": title,
            "height": HEIGHT,
            "margin": dict(l=60, r=20, t=50, b=50),
            "template": "plotly_white",
            **kwargs,
        }
    )
    return figure


def heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    title: str,
    colorbar: str,
    *,
    rows: Sequence[str] | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colorscale: str = "RdBu_r",
    x_title: str = "",
    y_title: str = "",
    text_format: str = ".2f",
) -> go.Figure:
    """A matrix with its values written in the cells (``None``: "not measured"): columns ``labels``, rows
    ``rows`` (default: the same labels), the first row on top. With ``zmin`` alone the scale runs from it to
    the largest value."""
    rows = list(labels if rows is None else rows)
    values = [v for row in matrix for v in row if v is not None]
    if zmin is not None and zmax is None and values:
        zmax = max(max(values), zmin)
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(labels),
            y=rows,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            texttemplate=f"%{{z:{text_format}}}",
            colorbar=dict(title=colorbar, tickformat=text_format),
        )
    )
    for row, cells in zip(rows, matrix):
        for column, value in zip(labels, cells):
            if value is None:
                figure.add_annotation(x=column, y=row, text="not measured", showarrow=False)
    figure.update_yaxes(autorange="reversed", title=y_title)
    figure.update_xaxes(title=x_title)
    return layout(figure, title)


def cosine_heatmap(labels: Sequence[str], cosines: Sequence[Sequence[float]]) -> go.Figure:
    """Pairwise cosine similarity of the directions."""
    return heatmap(labels, cosines, "Cosine similarity of the directions", "cosine", zmin=-1.0, zmax=1.0)


def pair_ablation_heatmap(labels: Sequence[str], pair_scores: Sequence[Sequence[float]]) -> go.Figure:
    """Mean harmful refusal score with two directions ablated (the diagonal: one alone)."""
    return heatmap(
        labels, pair_scores, "Refusal score, pair ablated (diagonal: single)", "refusal score", colorscale="Viridis"
    )


def single_ablation_bars(
    labels: Sequence[str], baseline: float, singles: Sequence[float], everything: float, threshold: float = 0.5
) -> go.Figure:
    """Judged harmful refusal rate with nothing, each single direction and all directions ablated."""
    names = ["none", *labels, "all"]
    figure = go.Figure(
        go.Bar(
            x=names,
            y=[baseline, *singles, everything],
            marker_color=HARMFUL,
            texttemplate="%{y:.0%}",
            name="refusal rate",
        )
    )
    figure.add_hline(y=threshold, line_dash="dash", line_color="grey")
    figure.update_yaxes(range=[0, 1], tickformat=".0%", title="judged refusal rate")
    figure.update_xaxes(title="ablated")
    return layout(figure, "Harmful refusal rate under ablation (judged)")


def cumulative_ablation(labels: Sequence[str], cumulative_scores: Sequence[float]) -> go.Figure:
    """Mean harmful refusal score as the directions are ablated one after another, in the set's order."""
    steps = ["none", *[f"+{label}" for label in labels]]
    figure = go.Figure(go.Scatter(x=steps, y=list(cumulative_scores), mode="lines+markers", line_color=HARMFUL))
    figure.add_hline(y=0, line_dash="dash", line_color="grey")
    figure.update_yaxes(title="mean refusal score")
    figure.update_xaxes(title="cumulative ablation")
    return layout(figure, "Refusal score, first k ablated")


def shift_heatmap(labels: Sequence[str], shifts: Sequence[Sequence[float]]) -> go.Figure:
    """Representational-independence shifts averaged over layers: row ablated, column measured."""
    return heatmap(
        labels,
        shifts,
        "Independence shift |Δcos| (row ablated, column read)",
        "|Δcos|",
        zmin=0.0,
        colorscale="Viridis",
        x_title="measured",
        y_title="ablated",
    )


def layer_profile(norm: Sequence[float], separation: Sequence[float | None], marked: Sequence[int] = ()) -> go.Figure:
    """Per-layer DIM vector norm and the harmful/harmless separation (Cohen's d) it gives."""
    layers = list(range(len(norm)))
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=layers, y=list(norm), name="DIM norm", mode="lines+markers"), secondary_y=False)
    figure.add_trace(
        go.Scatter(x=layers, y=list(separation), name="separation (Cohen's d)", mode="lines+markers"), secondary_y=True
    )
    for layer in marked:
        figure.add_vline(x=layer, line_dash="dot", line_color="grey")
    figure.update_xaxes(title="layer", dtick=1 if len(layers) <= 32 else None)
    figure.update_yaxes(title="norm", secondary_y=False)
    figure.update_yaxes(title="Cohen's d", secondary_y=True)
    return layout(figure, "Per-layer difference in means", legend=dict(orientation="h", y=-0.25))


def projection_boxes(
    labels: Sequence[str], harmful: Sequence[Sequence[float]], harmless: Sequence[Sequence[float]]
) -> go.Figure:
    """Projections of held-out prompts on each direction (``harmful[k]``: the values on direction k)."""
    figure = go.Figure()
    for name, values, colour in (("harmful", harmful, HARMFUL), ("harmless", harmless, HARMLESS)):
        figure.add_trace(
            go.Box(
                x=[label for label, column in zip(labels, values) for _ in column],
                y=[v for column in values for v in column],
                name=name,
                marker_color=colour,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
            )
        )
    figure.update_layout(boxmode="group")
    figure.update_yaxes(title="projection on unit direction")
    return layout(figure, "Held-out prompts projected on each direction")
