"""The paper's figures about training runs: cost per method (direction search against fine-tuning), the
loss curves of every round, and what each round buys (attack success, refusal under the strongest single
ablation, utility)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechrefusal.analysis import plots
from mechrefusal.analysis.paper.inputs import mean_accuracy
from mechrefusal.analysis.paper.output import SUBPLOT_MARGIN, PaperFigure
from mechrefusal.core.errors import SettingError

SEARCH_COLOUR, TUNING_COLOUR, UTILITY_COLOUR, LOSS_COLOUR = "#e67e22", plots.HARMLESS, "#16a085", "#7f8c8d"
UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"))
VALIDATION = (
    ("val_loss", "validation loss", SEARCH_COLOUR, "solid"),
    ("val_safety_loss", "validation safety (CE)", plots.HARMFUL, "dot"),
    ("val_utility_loss", "validation utility (weighted KL)", UTILITY_COLOUR, "dot"),
)
"""The validation series of a round's history: key, legend, colour, line dash."""
SCORES = ("val_refusal_score_harmful", "val_refusal_score_harmful_all_ablated", "val_refusal_score_harmless")
"""End-of-round refusal scores on validation prompts (train.job's round metrics)."""


def _unit(seconds: float) -> tuple[float, str]:
    """The largest of hours, minutes, seconds in which ``seconds`` is at least 2."""
    return next(((size, name) for size, name in UNITS if seconds >= 2 * size), UNITS[-1])


def round_cost(meta: dict[str, Any]) -> dict[str, float]:
    """One round's wall time split into fine-tuning and the rest (the direction search, plus the
    end-of-round refusal scores, a few forward passes)."""
    tuning = meta["metrics"]["training"]["wall_time_s"]
    return {"fine_tuning_s": tuning, "search_s": max(meta["wall_time_s"] - tuning, 0.0)}


def training_cost(runs: dict[str, list[dict[str, Any]]]) -> PaperFigure:
    """Wall time per method (``runs``: method name -> its rounds' metadata, as `read_rounds` returns), split
    into direction search and fine-tuning: round 0 (standard alignment, shared by the methods) as its own
    bar, from the first run that trained it, then each method's rounds from 1 on (a run of round 0 alone
    gives no bar of its own)."""
    if not runs:
        raise SettingError("The training-cost figure needs at least one training run.")
    rows: dict[str, dict[str, Any]] = {}
    trained_zero = [rounds[0] for rounds in runs.values() if rounds[0]["round"] == 0 and "copied_from" not in rounds[0]]
    if trained_zero:
        rows["round 0 (standard alignment)"] = {**round_cost(trained_zero[0]), "rounds": [0]}
    for name, rounds in runs.items():
        own = [meta for meta in rounds if meta["round"] > 0]
        if not own:
            continue
        costs = [round_cost(meta) for meta in own]
        rows[name] = {
            "fine_tuning_s": sum(c["fine_tuning_s"] for c in costs),
            "search_s": sum(c["search_s"] for c in costs),
            "rounds": [meta["round"] for meta in own],
        }
    for row in rows.values():
        row["total_s"] = row["fine_tuning_s"] + row["search_s"]
    size, unit = _unit(max(row["total_s"] for row in rows.values()))
    figure = go.Figure()
    for key, title, colour in (
        ("search_s", "direction search", SEARCH_COLOUR),
        ("fine_tuning_s", "fine-tuning", TUNING_COLOUR),
    ):
        figure.add_trace(
            go.Bar(
                y=list(rows),
                x=[row[key] / size for row in rows.values()],
                orientation="h",
                name=title,
                marker_color=colour,
                texttemplate="%{x:.1f}",
            )
        )
    figure.update_layout(barmode="stack")
    figure.update_yaxes(autorange="reversed", title="method")
    figure.update_xaxes(title=f"wall time ({unit})")
    plots.layout(figure, "Training cost: direction search and fine-tuning", legend=dict(orientation="h", y=-0.25))
    caption = (
        "Wall time of training, split into direction search (with the end-of-round refusal scores) and "
        "fine-tuning; round 0 is the standard alignment every method starts from, each method's bar its rounds "
        "from 1 on: "
        + "; ".join(
            f"{name} {row['total_s']:.0f} s ({row['search_s']:.0f} s search, rounds {row['rounds']})"
            for name, row in rows.items()
        )
        + "."
    )
    return PaperFigure(figure, caption, {"methods": rows, "unit": unit})


def training_curves(rounds: list[dict[str, Any]]) -> PaperFigure:
    """Every round's training loss (per step) and validation loss with its safety and utility terms (per
    evaluation) on one step axis, and the
    end-of-round refusal scores on validation prompts (harmful, harmful with all directions ablated,
    harmless)."""
    if not rounds:
        raise SettingError("The training-curve figure needs at least one round.")
    figure = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        subplot_titles=("Loss (safety CE + weighted utility KL)", "Refusal score after each round"),
        horizontal_spacing=0.12,
    )
    offset, numbers = 0, []
    for meta in rounds:
        history, settings = meta["metrics"]["training"], meta["settings"]
        steps = list(range(offset + 1, offset + len(history["train_loss"]) + 1))
        evals = settings["evals_per_round"]
        # the trainer's own evaluation steps (a set: with fewer steps than evaluations some coincide)
        planned = sorted({round(settings["steps"] * (i + 1) / evals) for i in range(evals)})
        eval_steps = [offset + step for step in planned[: len(history["val_loss"])]]
        first = meta is rounds[0]
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=history["train_loss"],
                mode="lines",
                line_color=LOSS_COLOUR,
                name="training loss",
                legendgroup="train",
                showlegend=first,
            ),
            row=1,
            col=1,
        )
        for key, title, colour, dash in VALIDATION:
            if history.get(key):  # runs from before the safety and utility terms were logged lack them
                figure.add_trace(
                    go.Scatter(
                        x=eval_steps,
                        y=history[key],
                        mode="lines+markers",
                        line=dict(color=colour, dash=dash),
                        name=title,
                        legendgroup=key,
                        showlegend=first,
                    ),
                    row=1,
                    col=1,
                )
        if offset:
            figure.add_vline(x=offset + 0.5, line_dash="dot", line_color="grey", row=1, col=1)
        figure.add_annotation(
            x=offset + (len(steps) + 1) / 2,
            y=1.0,
            yref="y domain",
            text=f"round {meta['round']}",
            showarrow=False,
            row=1,
            col=1,
        )
        numbers.append(
            {
                "round": meta["round"],
                "steps": len(steps),
                "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None,
                "best_val_loss": min(history["val_loss"]) if history["val_loss"] else None,
                **{f"last_{key}": history[key][-1] for key, *_ in VALIDATION[1:] if history.get(key)},
                **{key: meta["metrics"].get(key) for key in SCORES},
            }
        )
        offset += len(steps)
    for key, title, colour in (
        ("val_refusal_score_harmful", "harmful", plots.HARMFUL),
        ("val_refusal_score_harmful_all_ablated", "harmful, all ablated", "#2c3e50"),
        ("val_refusal_score_harmless", "harmless", plots.HARMLESS),
    ):
        figure.add_trace(
            go.Scatter(
                x=[row["round"] for row in numbers],
                y=[row[key] for row in numbers],
                mode="lines+markers",
                name=title,
                line_color=colour,
            ),
            row=1,
            col=2,
        )
    figure.add_hline(y=0, line_dash="dash", line_color="grey", row=1, col=2)
    figure.update_xaxes(title="optimiser step (all rounds)", row=1, col=1)
    figure.update_yaxes(title="loss (nats per token)", row=1, col=1)
    figure.update_xaxes(title="round", dtick=1, row=1, col=2)
    figure.update_yaxes(title="mean refusal score (log-odds)", row=1, col=2)
    plots.layout(
        figure, "Training curves per round", margin=SUBPLOT_MARGIN, height=420, legend=dict(orientation="h", y=-0.25)
    )
    caption = (
        "Training loss per optimiser step, and validation loss with its safety (CE on refusals) and utility "
        "(weighted KL to the original model) terms per evaluation, of every round (the best validation "
        "weights are kept), and the mean refusal score of validation prompts after each round: "
        + "; ".join(
            f"round {row['round']}: {row['steps']} steps, best validation loss {row['best_val_loss']:.3f}, harmful "
            f"score {row['val_refusal_score_harmful']:+.2f}"
            for row in numbers
            if row["best_val_loss"] is not None
        )
        + "."
    )
    return PaperFigure(figure, caption, {"rounds": numbers})


def rounds_summary(
    attacks: dict[int, dict[str, Any]],
    reports: dict[int, dict[str, Any]],
    utilities: dict[int, dict[str, Any]],
    *,
    judge: str = "harm",
) -> PaperFigure:
    """Per round: average attack success (``attacks``: round -> an attack job's ``"attacks"`` entry, under
    ``judge``), judged harmful refusal under the strongest single ablation (``reports``: round -> the analysed
    model's entry of an analysis report) and mean zero-shot accuracy (``utilities``: round -> a utility file).
    A round may be missing from any of them."""
    if not (attacks or reports or utilities):
        raise SettingError("The rounds figure needs attack results, analysis reports or utility files of some round.")
    key = f"asr/{judge}"
    for index, campaign in attacks.items():
        if key not in campaign["rates"]["average"]:
            raise SettingError(f"Round {index}'s attack results have no harm judge {judge!r}.")
    strongest = "refusal, strongest single ablation"
    series = {
        "average ASR": {r: campaign["rates"]["average"][key] for r, campaign in attacks.items()},
        strongest: {r: entry["independence"]["summary"]["min_single_rate"] for r, entry in reports.items()},
        "utility (mean accuracy)": {r: mean_accuracy(u) for r, u in utilities.items()},
    }
    named = {r: f" ({entry['independence']['summary']['weakest']})" for r, entry in reports.items()}
    figure = go.Figure()
    for (name, values), colour in zip(series.items(), (SEARCH_COLOUR, plots.HARMFUL, UTILITY_COLOUR)):
        ordered = sorted((r, v) for r, v in values.items() if v is not None)
        figure.add_trace(
            go.Scatter(
                x=[r for r, _ in ordered], y=[v for _, v in ordered], mode="lines+markers", name=name, line_color=colour
            )
        )
    figure.update_xaxes(title="round", dtick=1)
    figure.update_yaxes(title="rate", range=[-0.03, 1.03], tickformat=".0%")  # 0% and 100% visible
    plots.layout(figure, "What each round buys", legend=dict(orientation="h", y=-0.25))
    caption = (
        f"Per round: average attack success rate (judge {judge}), judged harmful refusal with the strongest single "
        "direction ablated (a saved one or the one the analysis found anew, named), and mean zero-shot accuracy: "
        + "; ".join(
            f"{name} "
            + ", ".join(
                f"round {r} {v:.0%}{named[r] if name == strongest else ''}"
                for r, v in sorted(values.items())
                if v is not None
            )
            for name, values in series.items()
            if values
        )
        + "."
    )
    return PaperFigure(
        figure, caption, {name: {str(r): v for r, v in values.items()} for name, values in series.items()}
    )
