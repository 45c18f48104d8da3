"""The paper's tables as heatmaps: attack success per method and attack (with the judge and its kappa),
and over-refusal and utility per method."""

from __future__ import annotations

from typing import Any

from mechrefusal.analysis import plots
from mechrefusal.analysis.attack_results import judge_label
from mechrefusal.analysis.paper.inputs import mean_accuracy
from mechrefusal.analysis.paper.output import PaperFigure
from mechrefusal.core.errors import SettingError

ATTACK_ORDER = ("gcg", "autodan", "pair", "human")
"""The paper's column order; other attacks follow in the campaign's order."""


def robustness(campaigns: dict[str, dict[str, Any]], *, judge: str = "harm") -> PaperFigure:
    """Attack success rate per method (rows, ``campaigns``' keys: each an attack job's ``"attacks"`` entry)
    and attack (columns: the first campaign's attacks, then their mean), under the harm judge ``judge``; every
    campaign must have attacked as many behaviours."""
    if not campaigns:
        raise SettingError("The robustness table needs at least one method's attack results.")
    key = f"asr/{judge}"
    first = next(iter(campaigns.values()))
    if judge not in first["judges"] or first["judges"][judge]["measures"] != "harm":
        harm = [name for name, about in first["judges"].items() if about["measures"] == "harm"]
        raise SettingError(f"No harm judge {judge!r} in the attack results; they have {harm or 'none'}.")
    present = [attack for attack in first["rates"] if attack != "average"]
    attacks = [a for a in ATTACK_ORDER if a in present] + [a for a in present if a not in ATTACK_ORDER]
    if not attacks:
        raise SettingError("The first method's attack results hold no attack.")
    for name, campaign in campaigns.items():
        missing = [a for a in attacks if a not in campaign["rates"] or key not in campaign["rates"][a]]
        if missing:
            raise SettingError(f"Method {name}'s attack results lack {', '.join(missing)} under judge {judge}.")
        if campaign["behaviours"] != first["behaviours"]:
            raise SettingError(
                f"Method {name} was attacked on {campaign['behaviours']} behaviours, the first on "
                f"{first['behaviours']}; a table compares like with like."
            )
    table = {name: shown_rates(campaign, attacks, key) for name, campaign in campaigns.items()}
    columns = [*attacks, "average"]
    label = judge_label(judge, first["judges"][judge])
    figure = plots.heatmap(
        columns,
        [[table[name][c] for c in columns] for name in table],
        f"Attack success rate ({label})",
        "ASR",
        rows=list(table),
        zmin=0.0,
        zmax=1.0,
        colorscale="Reds",
        x_title="attack",
        y_title="method",
        text_format=".0%",
    )
    kappa = (first["judges"][judge].get("agreement") or {}).get("kappa")
    numbers = {"asr": table, "judge": judge, "kappa": kappa, "behaviours": first["behaviours"]}
    caption = (
        f"Attack success rate per method and attack on {first['behaviours']} behaviours, {label}. Average ASR: "
        + ", ".join(f"{name} {row['average']:.1%}" for name, row in table.items())
        + "."
    )
    return PaperFigure(figure, caption, numbers)


def shown_rates(campaign: dict[str, Any], attacks: list[str], key: str) -> dict[str, float]:
    """The campaign's rate ``key`` (``asr/harm``, ``refusal/substring``) per attack of ``attacks`` and their
    mean (``"average"``), not the campaign's own average over every attack it ran."""
    rates = {attack: campaign["rates"][attack][key] for attack in attacks}
    return {**rates, "average": sum(rates.values()) / len(rates)}


UTILITY_COLUMNS = {
    "harmless_compliance": "harmless compliance",
    "edgy_compliance": "edgy compliance",
    "utility": "utility (mean accuracy)",
}


def overrefusal_utility(utilities: dict[str, dict[str, Any]]) -> PaperFigure:
    """Compliance on harmless and on safe-but-edgy prompts and mean zero-shot accuracy per method (rows,
    ``utilities``' keys: each a utility file as `read_utility` returns it)."""
    if not utilities:
        raise SettingError("The over-refusal and utility table needs at least one method's utility file.")
    table = {
        name: {
            "harmless_compliance": u["harmless_compliance"],
            "edgy_compliance": u["edgy_compliance"],
            "utility": mean_accuracy(u),
            "tasks": sorted(u["tasks"]),
            "cross_entropy": u.get("cross_entropy"),
            "kl": u.get("kl"),
        }
        for name, u in utilities.items()
    }
    figure = plots.heatmap(
        list(UTILITY_COLUMNS.values()),
        [[table[name][c] for c in UTILITY_COLUMNS] for name in table],
        "Over-refusal and utility",
        "rate",
        rows=list(table),
        zmin=0.0,
        zmax=1.0,
        colorscale="Blues",
        x_title="measure",
        y_title="method",
        text_format=".0%",
    )

    def percent(value: float | None) -> str:
        return "not measured" if value is None else f"{value:.0%}"

    caption = (
        "Compliance on harmless prompts and on safe-but-edgy prompts (prefix rule), and mean zero-shot accuracy "
        "over the measured tasks, per method: "
        + "; ".join(
            f"{name} {percent(row['harmless_compliance'])} / {percent(row['edgy_compliance'])} / "
            f"{percent(row['utility'])} ({', '.join(row['tasks']) or 'no task'})"
            for name, row in table.items()
        )
        + "."
    )
    return PaperFigure(figure, caption, {"methods": table})
