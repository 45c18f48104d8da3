"""The robustness scoreboard of one checkpoint: one row per attack, and per variant where an attack makes
several test cases of a behaviour under different edits (the directions attack's ``d0``, ``d1``, ...,
``all``; the re-search attack's ``k`` found directions ablated), read from attack job directories.

Each row gives the attack success rate (ASR) under a harm judge, the refusal rate under a refusal judge
(means over behaviours, as the campaign's rates), the budget, the seed, the number of behaviours and the
harmless KL: the mean first-token KL on harmless test prompts of the model edit its cases were answered
under, or not applicable (``None``) where the attack's intervention is made for one prompt (latent
perturbation, embedding suffix) or it has none (prompt attacks, prefilling). The weakest attack is the
row with the highest ASR, ties going to the lower refusal (campaigns judged by refusal judges only have
no ASR, and their weakest attack is the one with the lowest refusal).

>>> board = scoreboard([Path("reports/attack-prompt"), Path("reports/attack-whitebox")])
>>> print(board.to_markdown())
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mechrefusal.analysis.attack_results import judge_label
from mechrefusal.core.errors import DataError, MissingFileError, SettingError

NOT_APPLICABLE = {"per prompt": "n/a (per prompt)", "none": "n/a (no intervention)"}
"""Why an attack has no harmless KL, by its campaign's ``intervention`` kind (other than ``"model edit"``)."""


@dataclass(frozen=True)
class Row:
    """One attack (or one variant of it) on the checkpoint."""

    attack: str
    """The attack's name, with its variant (``directions d0``, ``research k=2``) and the campaign's own
    ablation when there is one (``gcg, d0 ablated``)."""
    asr: float | None
    """None when the scoreboard has no harm judge."""
    refusal: float | None
    """None when the scoreboard has no refusal judge."""
    harmless_kl: float | None
    kl_note: str
    """Empty where ``harmless_kl`` was measured, else why not (``n/a (per prompt)``, ``not measured``)."""
    budget: str | None
    seed: int | None
    behaviours: int
    caveat: str


@dataclass(frozen=True)
class Scoreboard:
    """The rows of one checkpoint, the judges that scored them (with their agreement with human labels) and
    the number of harmless prompts the KL is measured on."""

    model: str
    rows: tuple[Row, ...]
    harm_judge: str | None
    refusal_judge: str | None
    judges: dict[str, dict[str, Any]]
    """Judge name -> its campaign description (``measures``, ``agreement``)."""
    harmless_kl_prompts: int | None

    @property
    def weakest(self) -> Row:
        """The row with the highest ASR; among equal ASRs, the lowest refusal (then the first)."""
        return max(self.rows, key=lambda row: (row.asr or 0.0, -row.refusal if row.refusal is not None else 0.0))

    @classmethod
    def from_entries(
        cls,
        entries: Sequence[dict[str, Any]],
        sources: Sequence[str] | None = None,
        *,
        harm_judge: str | None = None,
        refusal_judge: str | None = None,
    ) -> Scoreboard:
        """The scoreboard of attack job ``"attacks"`` entries of one checkpoint (``sources`` name them in
        errors); the judges default to the first entry's first harm judge and first refusal judge."""
        if not entries:
            raise SettingError("A scoreboard needs at least one attack campaign.")
        sources = list(sources) if sources is not None else [f"campaign {i + 1}" for i in range(len(entries))]
        first = entries[0]
        harm_judge = harm_judge or _first_judge(first, "harm")
        refusal_judge = refusal_judge or _first_judge(first, "refusal")
        rows: dict[str, tuple[Row, str]] = {}
        for entry, source in zip(entries, sources):
            if entry.get("model") != first.get("model"):
                raise DataError(
                    f"{source} attacked {entry.get('model')}, not {first.get('model')}: a scoreboard is one "
                    "checkpoint's."
                )
            for judge in (harm_judge, refusal_judge):
                if judge is not None and judge not in entry["judges"]:
                    raise DataError(
                        f"{source} has no verdicts of the judge {judge!r}; rerun its campaign with that judge "
                        "added to --judges (cached completions are judged without attacking again)."
                    )
            if harm_judge is not None and entry["judges"][harm_judge]["measures"] != "harm":
                raise SettingError(
                    f"The judge {harm_judge!r} measures refusal, not harm; name a harm judge for the ASR."
                )
            if refusal_judge is not None and entry["judges"][refusal_judge]["measures"] != "refusal":
                raise SettingError(
                    f"The judge {refusal_judge!r} measures harm, not refusal; name a refusal judge for the "
                    "refusal column."
                )
            for row in _rows(entry, harm_judge, refusal_judge):
                if row.attack in rows:
                    raise DataError(
                        f"The row {row.attack!r} comes from both {rows[row.attack][1]} and {source}; give each "
                        "campaign once."
                    )
                rows[row.attack] = (row, source)
        judges = {name: first["judges"][name] for name in (harm_judge, refusal_judge) if name is not None}
        counts = [about.get("harmless_kl_prompts") for e in entries for about in e["attacks"].values()]
        return cls(
            str(first.get("model")),
            tuple(row for row, _ in rows.values()),
            harm_judge,
            refusal_judge,
            judges,
            next((count for count in counts if count), None),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scoreboard:
        """The scoreboard `to_dict` wrote."""
        fields = {key: value for key, value in data.items() if key != "weakest"}
        return cls(**{**fields, "rows": tuple(Row(**row) for row in data["rows"])})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, and the weakest attack's name."""
        return {**asdict(self), "rows": [asdict(row) for row in self.rows], "weakest": self.weakest.attack}

    def to_markdown(self) -> str:
        """The rows as a markdown table, the weakest attack named, the judges with their κ and the caveats."""
        lines = [
            "| attack | ASR | refusal | harmless KL | budget | seed | behaviours |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {row.attack} | {_percent(row.asr)} | {_percent(row.refusal)} | {kl_text(row)} | {row.budget or '–'} | "
            f"{'–' if row.seed is None else row.seed} | {row.behaviours} |"
            for row in self.rows
        ]
        weakest = self.weakest
        lines += [
            "",
            f"Weakest attack: {weakest.attack} (ASR {_percent(weakest.asr)}, refusal {_percent(weakest.refusal)}).",
        ]
        lines += ["", *self.notes()]
        return "\n".join(lines)

    def notes(self) -> list[str]:
        """What the columns mean: the judges with their κ, the harmless KL's prompts, and each caveat."""
        asr, refusal = (
            judge_label(name, self.judges[name]) if name else "no judge"
            for name in (self.harm_judge, self.refusal_judge)
        )
        caveats = {row.attack.split(" ")[0].rstrip(","): row.caveat for row in self.rows if row.caveat}
        return [
            f"{self.model}. ASR: {asr}; refusal: {refusal}. "
            f"Harmless KL: mean first-token KL against the un-intervened model on {self.harmless_kl_prompts or '–'} "
            "harmless test prompts, of the model edit the attack's cases were answered under; n/a where the "
            "intervention is made for one prompt (per prompt) or there is none (no intervention).",
            *(f"- {attack}: {caveat}" for attack, caveat in caveats.items()),
        ]


def scoreboard(
    attack_dirs: Sequence[Path], *, harm_judge: str | None = None, refusal_judge: str | None = None
) -> Scoreboard:
    """The scoreboard of one checkpoint from its attack job output directories (each a ``--out`` of
    ``python -m mechrefusal.attack``; prompt and white-box attacks may be separate campaigns)."""
    if not attack_dirs:
        raise SettingError("A scoreboard needs at least one attack directory.")
    return Scoreboard.from_entries(
        [_attack_entry(Path(d)) for d in attack_dirs],
        [str(d) for d in attack_dirs],
        harm_judge=harm_judge,
        refusal_judge=refusal_judge,
    )


def section_html(board: dict[str, Any]) -> str:
    """The scoreboard of a report (``report.json``'s ``"scoreboard"``) with data-key cells."""
    view = Scoreboard.from_dict(board)
    head = "".join(f"<th>{title}</th>" for title in ("attack", "ASR", "refusal", "harmless KL", "budget", "seed"))
    body = ""
    for i, row in enumerate(view.rows):
        cells = [
            ("asr", row.asr, _percent(row.asr)),
            ("refusal", row.refusal, _percent(row.refusal)),
            ("harmless_kl", row.harmless_kl, kl_text(row)),
            ("budget", row.budget, row.budget or "–"),
            ("seed", row.seed, "–" if row.seed is None else str(row.seed)),
            ("behaviours", row.behaviours, str(row.behaviours)),
        ]
        body += f"<tr><th>{html.escape(row.attack)}</th>" + "".join(
            f'<td data-key="scoreboard.rows.{i}.{key}" data-value="{html.escape(json.dumps(value))}">'
            f"{html.escape(text)}</td>"
            for key, value, text in cells
        )
        body += "</tr>"
    weakest = view.weakest
    notes = "".join(f"<li>{html.escape(note.removeprefix('- '))}</li>" for note in view.notes())
    return (
        f"<section><h2>Robustness scoreboard</h2><p><b>Weakest attack</b>: {html.escape(weakest.attack)} "
        f"(ASR {_percent(weakest.asr)}, refusal {_percent(weakest.refusal)})</p>"
        f"<table><tr>{head}<th>behaviours</th></tr>{body}</table><ul>{notes}</ul></section>"
    )


def kl_text(row: Row) -> str:
    """The harmless KL as a table cell: the number, or why there is none."""
    return f"{row.harmless_kl:.3f}" if row.harmless_kl is not None else row.kl_note


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _attack_entry(directory: Path) -> dict[str, Any]:
    """An attack job directory's ``"attacks"`` entry, with the job's budget and seed where the entry
    predates them."""
    path = directory / "report.json"
    if not path.is_file():
        raise MissingFileError(f"No report.json in {directory}; pass the --out directory of a finished attack job.")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); rerun the attack job to rewrite it.") from error
    if not isinstance(report, dict) or "attacks" not in report:
        raise DataError(f"{path} holds no attack results; pass the --out directory of an attack job.")
    settings = report.get("settings", {})
    return {"budget": settings.get("budget"), "seed": settings.get("seed"), **report["attacks"]}


def _first_judge(entry: dict[str, Any], measures: str) -> str | None:
    """The first judge of ``entry`` that measures ``measures`` (``"harm"`` or ``"refusal"``), if any."""
    return next((name for name, about in entry["judges"].items() if about["measures"] == measures), None)


def _rows(entry: dict[str, Any], harm_judge: str | None, refusal_judge: str | None) -> list[Row]:
    """One row per attack of a campaign entry, or per variant of an attack that has them."""
    rows = []
    ablated = entry.get("ablate")
    suffix = f", {ablated} ablated" if ablated not in (None, "none") else ""
    for attack, about in entry["attacks"].items():
        outcomes = [o for o in entry["outcomes"] if o["attack"] == attack]
        key = about.get("variant")
        values = list(dict.fromkeys(case["info"][key] for o in outcomes for case in o["cases"])) if key else [None]
        for value in values:
            # per behaviour, the indices of its test cases of this variant
            picked = [
                (o, [i for i, case in enumerate(o["cases"]) if key is None or case["info"][key] == value])
                for o in outcomes
            ]
            picked = [(o, indices) for o, indices in picked if indices]
            name = (
                attack if key is None else f"{attack} {value}" if isinstance(value, str) else f"{attack} {key}={value}"
            )
            kl, note = _kl(about, [o.get("harmless_kl") for o, _ in picked], [i for _, i in picked])
            rows.append(
                Row(
                    attack=name + suffix,
                    asr=_mean_rate(picked, harm_judge, "harmful") if harm_judge else None,
                    refusal=_mean_rate(picked, refusal_judge, "refused") if refusal_judge else None,
                    harmless_kl=kl,
                    kl_note=note,
                    budget=entry.get("budget"),
                    seed=entry.get("seed"),
                    behaviours=len(picked),
                    caveat=about.get("caveat", ""),
                )
            )
    return rows


def _mean_rate(picked: list[tuple[dict[str, Any], list[int]]], judge: str, verdict: str) -> float:
    """Per behaviour the share of its picked test cases the judge's ``verdict`` is true for, then the mean."""
    shares = [sum(bool(o["verdicts"][judge][i][verdict]) for i in indices) / len(indices) for o, indices in picked]
    return sum(shares) / len(shares)


def _kl(
    about: dict[str, Any], costs: list[list[float | None] | None], indices: list[list[int]]
) -> tuple[float | None, str]:
    """The mean harmless KL over the picked test cases, or None and why."""
    kind = about.get("intervention")
    if kind in NOT_APPLICABLE:
        return None, NOT_APPLICABLE[kind]
    values = [case_costs[i] for case_costs, picked in zip(costs, indices) if case_costs for i in picked]
    measured = [value for value in values if value is not None]
    if kind is None or not measured:
        return None, "not measured"
    return sum(measured) / len(measured), ""
