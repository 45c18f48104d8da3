"""The attack section of a report: success and refusal rates per attack, each naming its judge and the
judge's agreement with human labels (Cohen's kappa), as text and as HTML."""

from __future__ import annotations

import html
from typing import Any


def judge_label(name: str, about: dict[str, Any]) -> str:
    """``"judge harm, κ=0.71 [0.60, 0.80]"``, or ``"judge x, κ not measured"``."""
    agreement = about.get("agreement")
    if not agreement:
        return f"judge {name}, κ not measured"
    low, high = agreement.get("kappa_ci", (None, None))
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"judge {name}, κ={agreement['kappa']:.2f}{interval}"


def rate_columns(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(column key in ``rates``, column title) pairs: ASRs of harm judges first, then refusal rates."""
    columns = []
    for kind, title, measures in (("asr", "ASR", "harm"), ("refusal", "refusal", "refusal")):
        for name, about in entry["judges"].items():
            if about["measures"] == measures:
                columns.append((f"{kind}/{name}", f"{title} ({judge_label(name, about)})"))
    return columns


def summary_lines(entry: dict[str, Any]) -> list[str]:
    """The rates table as plain text, and each attack's caveat."""
    columns = rate_columns(entry)
    width = max(len(row_label(entry, name)) for name in entry["rates"]) + 2
    lines = [
        f"attacks on {entry.get('model', 'the model')} (ablated: {entry.get('ablate', 'none')}), "
        f"{entry['behaviours']} behaviours"
    ]
    lines += [f"  {title}" for _, title in columns]
    lines.append(" " * width + "".join(f"{title.split(' ')[0]:>10}" for _, title in columns))
    for attack, row in entry["rates"].items():
        lines.append(f"{row_label(entry, attack):<{width}}" + "".join(f"{row[key]:>10.1%}" for key, _ in columns))
    lines += [f"{attack}: {about['caveat']}" for attack, about in entry["attacks"].items() if about["caveat"]]
    return lines + undecided_notes(entry)


def row_label(entry: dict[str, Any], attack: str) -> str:
    """An attack's row title: its name, and "(variants pooled)" where its rates average several variants of it
    (each saved direction ablated, each re-search round; the scoreboard gives them one by one)."""
    pooled = entry.get("attacks", {}).get(attack, {}).get("variant")
    return f"{attack} (variants pooled)" if pooled else attack


def undecided_notes(entry: dict[str, Any]) -> list[str]:
    """One line per harm judge that could not decide some test cases (counted as not harmful)."""
    total = entry.get("test_cases", 0)
    return [
        f"judge {judge} could not decide {count} of {total} test cases (counted as not harmful: its ASR is a "
        "lower bound)"
        for judge, count in entry.get("undecided", {}).items()
        if count
    ]


def section_html(entry: dict[str, Any]) -> str:
    """The rates table with data-key cells (paths into report.json), the caveats and one example per attack."""
    columns = rate_columns(entry)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    rows = "".join(
        f"<tr><th>{html.escape(row_label(entry, attack))}</th>"
        + "".join(
            f'<td data-key="attacks.rates.{html.escape(attack)}.{html.escape(key)}" data-value="{row[key]}">'
            f"{row[key]:.1%}</td>"
            for key, _ in columns
        )
        + "</tr>"
        for attack, row in entry["rates"].items()
    )
    caveats = "".join(
        f"<li><b>{html.escape(attack)}</b>: {html.escape(about['caveat'])}</li>"
        for attack, about in entry["attacks"].items()
        if about["caveat"]
    )
    caveats += "".join(f"<li>{html.escape(note)}</li>" for note in undecided_notes(entry))
    examples = "".join(_example(outcome) for outcome in _first_per_attack(entry.get("outcomes", [])))
    return (
        f'<section><h2>Attacks</h2><p class="meta">{html.escape(str(entry.get("model", "")))}; ablated: '
        f"{html.escape(str(entry.get('ablate', 'none')))}; {entry['behaviours']} behaviours; "
        f"{entry.get('max_new_tokens', '')} new tokens per completion</p>"
        f"<table><tr><th>attack</th>{head}</tr>{rows}</table>"
        + (f"<ul>{caveats}</ul>" if caveats else "")
        + (f"<h3>Examples</h3>{examples}" if examples else "")
        + "</section>"
    )


def _first_per_attack(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        seen.setdefault(outcome["attack"], outcome)
    return list(seen.values())


def _example(outcome: dict[str, Any]) -> str:
    prompt = outcome["cases"][0]["prompt"]
    completion = outcome["completions"][0]
    return (
        f"<details><summary>{html.escape(outcome['attack'])}: {html.escape(outcome['behaviour']['text'])}</summary>"
        f"<p><b>prompt</b></p><pre>{html.escape(prompt[:2000])}</pre>"
        f"<p><b>completion</b></p><pre>{html.escape(completion)}</pre></details>"
    )
