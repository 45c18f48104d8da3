"""The analysis report: ``report.json``, a self-contained ``report.html`` and PNG figures.

`Report` wraps the JSON-ready dict that `mechrefusal.analyze` builds (one entry per model under
``"models"``). Every number on the page is read from that dict: table cells carry their JSON path and
value (``data-key``, ``data-value``) and each figure is rebuilt from it (`mechrefusal.analysis.plots`), so the
page and the JSON cannot disagree. The page inlines plotly.js and opens offline; in Jupyter the
report shows itself (`Report._repr_html_`).
"""

from __future__ import annotations

import html
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.utils import PlotlyJSONEncoder

from mechrefusal.analysis import attack_results, plots, scoreboard

FIGURES = {
    "cosines": "Cosine matrix",
    "single_ablation": "Single ablations (judged)",
    "pair_ablation": "Pair ablations",
    "cumulative": "Cumulative ablation",
    "shifts": "Representational independence",
    "layers": "Per-layer DIM norm and separation",
    "projections": "Projections",
}
PNG_TIMEOUT_S = 120
PNG_HINT = (
    "PNG figures skipped: no Chromium found for kaleido; install one (Debian: apt-get install chromium, "
    "or run plotly_get_chrome) and rerun."
)


def _percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _number(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _plain(value) -> str:
    if value is None:
        return "not broken"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


SUMMARY_FIELDS = {
    "harmful_refusal": "independence.baseline_rate",
    "weakest_single_refusal": "independence.summary.min_single_rate",
    "weakest": "independence.summary.weakest",
    "all_ablated_refusal": "independence.all_rate",
    "directions_to_break": "independence.summary.directions_to_break",
    "breaking_set": "independence.summary.breaking_set",
    "fail_closed": "independence.summary.fail_closed",
    "threshold": "independence.summary.threshold",
    "harmless_refusal": "harmless.baseline_rate",
    "harmless_all_ablated_refusal": "harmless.all_ablated_rate",
    "kl_all_ablated": "harmless.kl_all_ablated",
    "harmful_score": "independence.baseline_score",
    "harmful_all_ablated_score": "independence.all_score",
    "harmless_score": "independence.harmless_score",
    "harmless_all_ablated_score": "harmless.all_ablated_score",
}
"""`Summary`'s fields and where each lives in a model's entry."""
# (row title, path inside one model's entry, formatter) of the summary table, by `Summary` field
SUMMARY_ROWS: list[tuple[str, str, Callable]] = [
    (title, SUMMARY_FIELDS[name], fmt)
    for title, name, fmt in [
        ("harmful refusal, nothing ablated", "harmful_refusal", _percent),
        ("harmful refusal, weakest single ablated", "weakest_single_refusal", _percent),
        ("weakest direction", "weakest", _plain),
        ("harmful refusal, all ablated", "all_ablated_refusal", _percent),
        ("directions to break refusal", "directions_to_break", _plain),
        ("breaking set", "breaking_set", _plain),
        ("fail-closed (every single ablation leaves refusal)", "fail_closed", _plain),
        ("harmless refusal, nothing ablated", "harmless_refusal", _percent),
        ("harmless refusal, all ablated", "harmless_all_ablated_refusal", _percent),
        ("first-token KL on harmless, all ablated", "kl_all_ablated", lambda v: "–" if v is None else f"{v:.3f}"),
        ("mean refusal score, harmful", "harmful_score", _number),
        ("mean refusal score, harmful, all ablated", "harmful_all_ablated_score", _number),
        ("mean refusal score, harmless", "harmless_score", _number),
        ("mean refusal score, harmless, all ablated", "harmless_all_ablated_score", _number),
    ]
]
DIRECTION_COLUMNS = ("label", "source", "method", "layer", "position", "norm")


def lookup(entry: dict, path: str):
    """The value at a dotted path (``"a.0.b"``) of a JSON-like dict."""
    for part in path.split("."):
        entry = entry[int(part)] if isinstance(entry, list) else entry[part]
    return entry


@dataclass(frozen=True)
class Summary:
    """One model's summary table (judged refusal rates on held-out prompts, mean refusal scores, KL)."""

    harmful_refusal: float | None
    weakest_single_refusal: float | None
    """The lowest harmful refusal rate over single ablations (the ``weakest`` direction's)."""
    weakest: str
    all_ablated_refusal: float | None
    directions_to_break: int | None
    """Smallest number of directions whose joint ablation brings refusal below ``threshold`` (``None``: not
    even all of them)."""
    breaking_set: tuple[str, ...] | None
    fail_closed: bool
    threshold: float
    harmless_refusal: float | None
    harmless_all_ablated_refusal: float | None
    kl_all_ablated: float | None
    harmful_score: float | None
    harmful_all_ablated_score: float | None
    harmless_score: float | None
    harmless_all_ablated_score: float | None

    @classmethod
    def from_entry(cls, entry: dict) -> Summary:
        values = {name: lookup(entry, path) for name, path in SUMMARY_FIELDS.items()}
        if values["breaking_set"] is not None:
            values["breaking_set"] = tuple(values["breaking_set"])
        return cls(**values)

    def __repr__(self) -> str:
        return (
            f"Summary(harmful_refusal={_percent(self.harmful_refusal)}, weakest_single_refusal="
            f"{_percent(self.weakest_single_refusal)}, all_ablated_refusal={_percent(self.all_ablated_refusal)}, "
            f"fail_closed={self.fail_closed}, directions_to_break={self.directions_to_break})"
        )


@dataclass(frozen=True)
class DirectionRow:
    """One analysed direction: where it came from, and what ablating or adding it did."""

    label: str
    source: str
    """``"saved"`` (the checkpoint's), ``"file"`` (``--directions``) or ``"fresh"`` (found by the analysis)."""
    method: str
    layer: int
    position: int
    norm: float
    passed_filters: bool | None
    single_refusal: float | None
    """Judged harmful refusal rate with this direction alone ablated."""
    induce_score: float | None
    """Mean refusal score of harmless prompts with this direction added at its layer."""


@dataclass(frozen=True)
class ModelResult:
    """One model's part of the report; ``entry`` is its raw JSON entry."""

    role: str
    """``"model"``, or ``"compare"`` for the model given with ``--compare``."""
    model: str
    summary: Summary
    directions: tuple[DirectionRow, ...]
    entry: dict

    @classmethod
    def from_entry(cls, entry: dict) -> ModelResult:
        ind = entry["independence"]
        rows = tuple(
            DirectionRow(
                **{name: d[name] for name in DIRECTION_COLUMNS},
                passed_filters=d.get("passed_filters"),
                single_refusal=ind["single_rates"][k],
                induce_score=ind["induce_scores"][k],
            )
            for k, d in enumerate(entry["directions"])
        )
        return cls(
            role=entry["role"], model=entry["model"], summary=Summary.from_entry(entry), directions=rows, entry=entry
        )

    def __repr__(self) -> str:
        return (
            f"ModelResult(role={self.role!r}, model={Path(self.model).name!r}, directions={len(self.directions)}, "
            f"harmful_refusal={_percent(self.summary.harmful_refusal)}, fail_closed={self.summary.fail_closed})"
        )


def finite(value):
    """A copy of a JSON-like value with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def model_figures(entry: dict) -> dict:
    """The report's plotly figures for one model's entry, keyed as in ``FIGURES``."""
    ind = entry["independence"]
    labels = ind["labels"]
    return {
        "cosines": plots.cosine_heatmap(labels, ind["cosines"]),
        "single_ablation": plots.single_ablation_bars(
            labels, ind["baseline_rate"], ind["single_rates"], ind["all_rate"], ind["summary"]["threshold"]
        ),
        "pair_ablation": plots.pair_ablation_heatmap(labels, ind["pair_scores"]),
        "cumulative": plots.cumulative_ablation(labels, ind["cumulative_scores"]),
        "shifts": plots.shift_heatmap(labels, ind["shifts"]),
        "layers": plots.layer_profile(
            entry["layer_profile"]["norm"],
            entry["layer_profile"]["separation"],
            sorted({d["layer"] for d in entry["directions"]}),
        ),
        "projections": plots.projection_boxes(
            labels, entry["projections"]["harmful"], entry["projections"]["harmless"]
        ),
    }


def _cell(prefix: str, path: str, value, text: str) -> str:
    return (
        f'<td data-key="{html.escape(prefix + path)}" data-value="{html.escape(json.dumps(value))}">'
        f"{html.escape(text)}</td>"
    )


def _model_section(index: int, entry: dict, uid: str) -> str:
    prefix = f"models.{index}."
    rows = "".join(
        f"<tr><th>{html.escape(title)}</th>{_cell(prefix, path, lookup(entry, path), fmt(lookup(entry, path)))}</tr>"
        for title, path, fmt in SUMMARY_ROWS
    )
    ind = entry["independence"]
    head = "".join(f"<th>{name}</th>" for name in (*DIRECTION_COLUMNS, "refusal, ablated alone", "induce score"))
    body = ""
    for k, direction in enumerate(entry["directions"]):
        cells = "".join(
            _cell(
                prefix,
                f"directions.{k}.{name}",
                direction[name],
                f"{direction[name]:.3g}" if name == "norm" else str(direction[name]),
            )
            for name in DIRECTION_COLUMNS
        )
        cells += _cell(
            prefix, f"independence.single_rates.{k}", ind["single_rates"][k], _percent(ind["single_rates"][k])
        )
        cells += _cell(
            prefix, f"independence.induce_scores.{k}", ind["induce_scores"][k], _number(ind["induce_scores"][k])
        )
        body += f"<tr>{cells}</tr>"
    figures = ""
    for key, figure in model_figures(entry).items():
        target = f"{uid}-{index}-{key}"
        spec = figure.to_json().replace("</", "<\\/")
        figures += (
            f'<figure><figcaption>{html.escape(FIGURES[key])}</figcaption><div class="plot" id="{target}">'
            f'</div><script type="application/json" class="figure-spec" data-target="{target}">{spec}'
            "</script></figure>"
        )
    examples = "".join(
        f"<li><b>{html.escape(name)} ablated</b>: {html.escape(example['prompt'])} → "
        f"<i>{html.escape(example['completion'])}</i> ({'refused' if example['refused'] else 'answered'})</li>"
        for name, items in ind["examples"].items()
        for example in items
    )
    return (
        f'<section class="model"><h2>{html.escape(entry["role"])}: {html.escape(entry["model"])}</h2>'
        f'<table class="summary">{rows}</table><h3>Directions</h3>'
        f'<table class="directions"><tr>{head}</tr>{body}</table>'
        f'<p class="note">Fail-closed search: {html.escape(ind["summary"]["search"])}.</p>'
        f"{figures}<details><summary>Example completions (harmful prompts)</summary><ul>{examples}</ul></details>"
        "</section>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.models { display: grid; gap: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
td[data-value] { font-variant-numeric: tabular-nums; }
figure { margin: 0 0 1em; } figcaption { font-weight: 600; }
.note, .meta { color: #555; font-size: 0.85em; }
"""
RENDER = """
(function () {
  var root = document.getElementById("%s");
  root.querySelectorAll("script.figure-spec").forEach(function (element) {
    var spec = JSON.parse(element.textContent);
    Plotly.newPlot(element.dataset.target, spec.data, spec.layout, {responsive: true, displaylogo: false});
  });
})();
"""


class Report:
    """An analysis report: ``data`` is exactly what ``report.json`` holds.

    ``notes`` are one-line remarks from writing it (e.g. why PNG figures were skipped).
    """

    def __init__(self, data: dict, *, out: str | Path | None = None) -> None:
        self.data = finite(data)
        self.out = Path(out) if out is not None else None
        self.notes: list[str] = []

    @classmethod
    def load(cls, out: str | Path) -> Report:
        """Read a report directory written by :meth:`save`."""
        return cls(json.loads((Path(out) / "report.json").read_text()), out=out)

    @property
    def models(self) -> tuple[ModelResult, ...]:
        """Typed views of each model's entry (``report.models[0].summary.harmful_refusal``), in report order."""
        return tuple(ModelResult.from_entry(entry) for entry in self.data["models"])

    def __repr__(self) -> str:
        models = "; ".join(
            f"{m.role} {Path(m.model).name}: refusal {_percent(m.summary.harmful_refusal)} -> "
            f"{_percent(m.summary.all_ablated_refusal)} ablated, fail_closed={m.summary.fail_closed}"
            for m in self.models
        )
        return f"Report({models})"

    def summary(self) -> str:
        """The summary tables as plain text, one column per model."""
        models = self.data["models"]
        width = max(len(title) for title, _, _ in SUMMARY_ROWS) + 2
        lines = [" " * width + "".join(f"{entry['role']:>24}" for entry in models)] if models else []
        for title, path, fmt in SUMMARY_ROWS if models else ():
            lines.append(f"{title:<{width}}" + "".join(f"{fmt(lookup(entry, path)):>24}" for entry in models))
        for entry in models:
            lines.append(
                f"{entry['role']} {entry['model']}: directions "
                + "; ".join(
                    f"{d['label']} ({d['source']} {d['method']}, layer {d['layer']}, "
                    f"position {d['position']}, norm {d['norm']:.3g})"
                    for d in entry["directions"]
                )
            )
        if "attacks" in self.data:
            lines += attack_results.summary_lines(self.data["attacks"])
        if "scoreboard" in self.data:
            lines += ["robustness scoreboard", scoreboard.Scoreboard.from_dict(self.data["scoreboard"]).to_markdown()]
        lines.append(f"wall time {self.data['wall_time_s']} s")
        return "\n".join(lines)

    def _body(self, uid: str) -> str:
        models = self.data["models"]
        sections = "".join(_model_section(i, entry, uid) for i, entry in enumerate(models))
        versions = ", ".join(f"{key} {value}" for key, value in self.data["versions"].items())
        attacks = attack_results.section_html(self.data["attacks"]) if "attacks" in self.data else ""
        if "scoreboard" in self.data:
            attacks = scoreboard.section_html(self.data["scoreboard"]) + attacks
        return (
            f'<div id="{uid}"><h1>Refusal analysis</h1><p class="meta">{html.escape(versions)}; wall time '
            f'{self.data["wall_time_s"]} s</p><div class="models" style="grid-template-columns: repeat('
            f'{max(len(models), 1)}, minmax(0, 1fr))">{sections}</div>{attacks}</div><script>{RENDER % uid}</script>'
        )

    def html(self) -> str:
        """A self-contained page (plotly.js inlined; no network needed)."""
        from plotly.offline import get_plotlyjs

        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mechrefusal report</title>'
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            f"{self._body('report')}</body></html>"
        )

    def _repr_html_(self) -> str:
        """Summary and figures inline in Jupyter (plotly.js included, so it works offline)."""
        from plotly.offline import get_plotlyjs

        return f"<style>{STYLE}</style><script>{get_plotlyjs()}</script>{self._body(f'mr-{uuid.uuid4().hex[:8]}')}"

    def save(self, out: str | Path) -> Path:
        """Write ``report.json``, ``report.html`` and ``figures/*.png`` (PNG only where kaleido finds a
        Chromium; otherwise a note says how to get them). Returns the directory."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.data, indent=2, allow_nan=False))
        (out / "report.html").write_text(self.html())
        self.out = out
        note = write_pngs(self.data, out / "figures")
        self.notes = [note] if note else []
        return out


def chromium_path() -> str | None:
    """The Chromium kaleido would use, if one exists."""
    from choreographer.browsers.chromium import Chromium

    path = Chromium.find_browser(skip_local=False)
    return path if path and Path(path).is_file() else None


def write_pngs(data: dict, directory: Path) -> str | None:
    """Every model's figures as ``{model index}-{figure}.png``; returns a one-line note when none were written."""
    return render_pngs(
        {
            directory / f"{index}-{key}.png": figure
            for index, entry in enumerate(data["models"])
            for key, figure in model_figures(entry).items()
        }
    )


def render_pngs(figures: dict[Path, go.Figure], *, page: str = "report.html", width: int = 800) -> str | None:
    """Write each figure as a PNG at its path (2x scale, its own height); return a one-line note when none
    were written (it names ``page``, the page that has the figures anyway).

    Kaleido runs in a child process bounded by ``PNG_TIMEOUT_S`` (its Chromium has been seen to hang
    on a loaded machine), with MathJax off so it requests nothing from the network.
    """
    if chromium_path() is None:
        return PNG_HINT
    if not figures:
        return None
    directory = next(iter(figures)).parent
    directory.mkdir(parents=True, exist_ok=True)
    specs = [
        {
            "fig": figure.to_plotly_json(),
            "path": str(path),
            "width": width,
            "height": figure.layout.height or plots.HEIGHT,
        }
        for path, figure in figures.items()
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=directory, delete=False) as handle:
        json.dump(specs, handle, cls=PlotlyJSONEncoder)
    source = Path(handle.name)
    child = subprocess.Popen(
        [sys.executable, "-c", "from mechrefusal.analysis.report import _png_child; _png_child()", str(source)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = child.communicate(timeout=PNG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # kaleido's Chromium too: it is in the child's session
        child.wait()
        return f"PNG figures skipped: kaleido did not finish in {PNG_TIMEOUT_S} s; {page} has every figure."
    finally:
        source.unlink()
    if child.returncode:
        lines = stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        return f"PNG figures skipped: kaleido failed ({lines[-1]}); {page} has every figure."
    return None


def _png_child() -> None:
    """Entry point of the PNG child process: the JSON list of figures and paths in ``sys.argv[1]``."""
    import kaleido

    specs = [
        {
            "fig": spec["fig"],
            "path": Path(spec["path"]),
            "opts": {"format": "png", "width": spec["width"], "height": spec["height"], "scale": 2},
        }
        for spec in json.loads(Path(sys.argv[1]).read_text())
    ]
    kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False, "timeout": PNG_TIMEOUT_S / 2})
