"""The robustness scoreboard: the harmless KL a campaign records per model edit (zero for an ablation
that changes nothing, positive for one that does, not applicable without an edit, cached for a resumed
campaign), one row per attack and per variant, the weakest attack, the report section, the markdown
script and their one-sentence errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import ClassVar

import pytest

from mechrefusal import Ablate, Direction, DirectionSet
from mechrefusal.analysis.report import lookup
from mechrefusal.analysis.scoreboard import Scoreboard, scoreboard
from mechrefusal.attack import AttackSettings, run
from mechrefusal.attacks import ATTACKS, Behaviour, TestCase
from mechrefusal.attacks.base import intervention_kind
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.campaign import Campaign, Outcome, run_campaign
from mechrefusal.attacks.harmless_kl import harmless_prompts
from mechrefusal.core.errors import DataError, MissingFileError, SettingError
from mechrefusal.measure.metrics import first_token_kl
from mechrefusal.reproduce import analysis_script
from tests.test_analyze import page_numbers
from tests.test_campaign import EveryNonRefusalHarmful, SwapAttack
from tests.test_toy_refusal import random_like


@dataclass
class AblateAt:
    """Test attack: the plain behaviour answered with ``direction`` ablated at ``layers`` only (none: an
    edit that changes nothing)."""

    direction: Direction
    layers: tuple[int, ...] = ()
    caveat: str = ""
    fixed_edit: ClassVar[bool] = True

    def settings(self) -> dict:
        return {"layers": list(self.layers)}

    def run(self, model, behaviour, *, intervention=None, seed=0) -> list[TestCase]:
        return [TestCase(behaviour.text)]

    def generation_intervention(self, model, case) -> Ablate:
        return Ablate(self.direction, layers=self.layers)


@pytest.fixture
def checkpoint(toy, dim, monkeypatch):
    """The toy with the directions of a trainer checkpoint: a random direction (d0) and its DIM one (d1)."""
    monkeypatch.setattr(toy, "directions", DirectionSet([random_like(dim, 5), dim]))
    return toy


@pytest.fixture
def harm_judge(monkeypatch):
    from mechrefusal.measure import judges

    monkeypatch.setitem(judges.JUDGES._entries, "test-harm", EveryNonRefusalHarmful)
    return "test-harm"


def test_harmless_kl_is_zero_for_an_edit_that_changes_nothing_and_none_without_an_edit(toy, dim, tmp_path):
    attacks = {"nowhere": AblateAt(dim), "everywhere": AblateAt(dim, tuple(range(toy.n_layers))), "swap": SwapAttack()}
    behaviours = load_behaviours("harmful", 1, split="train")
    campaign = run_campaign(toy, attacks, behaviours, out=tmp_path, max_new_tokens=2, progress=False)
    costs = {o.attack: o.harmless_kl for o in campaign.outcomes}
    expected = first_token_kl(toy, harmless_prompts(16), Ablate(dim)).mean().item()
    assert costs["nowhere"] == [0.0] and costs["everywhere"] == [pytest.approx(expected)] and expected > 1e-3
    assert costs["swap"] == [None, None]
    kinds = {name: about["intervention"] for name, about in campaign.to_dict()["attacks"].items()}
    assert kinds == {"nowhere": "model edit", "everywhere": "model edit", "swap": "none"}
    assert [intervention_kind(ATTACKS.get(name)()) for name in ("latent", "embedding", "prefilling", "cone")] == [
        "per prompt",
        "per prompt",
        "none",
        "model edit",
    ]
    with pytest.raises(SettingError, match="needs 1 to 137 harmless test prompts, got 0"):
        run_campaign(toy, attacks, behaviours, out=tmp_path, harmless_kl_prompts=0, progress=False)


def test_directions_rows_and_a_resumed_campaign_reuses_the_cached_kl(checkpoint, harm_judge, tmp_path, monkeypatch):
    computed = []

    def counted(model, prompts, intervention):
        computed.append(intervention)
        return first_token_kl(model, prompts, intervention)

    monkeypatch.setattr("mechrefusal.attacks.harmless_kl.first_token_kl", counted)
    behaviours = load_behaviours("harmful", 2, split="train")
    kwargs = dict(out=tmp_path, judges=[harm_judge, "substring"], max_new_tokens=8, dtype="float32", progress=False)
    first = run_campaign(checkpoint, {"directions": ATTACKS.get("directions")()}, behaviours, **kwargs)
    assert len(computed) == 3  # d0, d1 and all: once per distinct edit, not per behaviour
    again = run_campaign(checkpoint, {"directions": ATTACKS.get("directions")()}, behaviours, **kwargs)
    assert len(computed) == 3 and [o.harmless_kl for o in again.outcomes] == [o.harmless_kl for o in first.outcomes]
    costs = first.outcomes[0].harmless_kl
    assert first.outcomes[1].harmless_kl == costs and all(cost > 0 for cost in costs)

    board = Scoreboard.from_entries([{**again.to_dict(), "model": "toy", "budget": "cpu", "seed": 0}])
    assert [row.attack for row in board.rows] == ["directions d0", "directions d1", "directions all"]
    # only the cases that ablate the DIM direction comply (tests/test_attack_directions.py)
    assert [row.asr for row in board.rows] == [0.0, 1.0, 1.0] and [row.refusal for row in board.rows] == [1, 0, 0]
    assert [row.harmless_kl for row in board.rows] == pytest.approx(costs)
    assert board.weakest.attack == "directions d1" and {row.behaviours for row in board.rows} == {2}
    assert (board.harm_judge, board.refusal_judge, board.harmless_kl_prompts) == (harm_judge, "substring", 16)


def entry(verdicts: dict[str, list[tuple[bool, bool]]], **extra) -> dict:
    """A campaign's "attacks" entry: per prompt attack, (harmful, refused) of each behaviour's one test case."""
    behaviours = [Behaviour(f"request {i}", "Sure") for i in range(2)]
    outcomes = [
        Outcome(
            attack,
            behaviour,
            [TestCase(behaviour.text)],
            ["..."],
            {
                "harm": [{"refused": refused, "harmful": harmful, "reason": ""}],
                "substring": [{"refused": refused, "harmful": None, "reason": ""}],
            },
            0.0,
            [None],
        )
        for attack, pairs in verdicts.items()
        for behaviour, (harmful, refused) in zip(behaviours, pairs)
    ]
    judges = {
        "harm": {"measures": "harm", "agreement": {"kappa": 0.8, "kappa_ci": [0.7, 0.9]}},
        "substring": {"measures": "refusal", "agreement": None},
    }
    about = {"settings": {}, "caveat": "", "intervention": "none", "variant": None, "harmless_kl_prompts": 16}
    fields = {"model": "toy", "ablate": "none", "budget": "cpu", "seed": 0, **extra}
    return {**Campaign(outcomes, judges, {attack: about for attack in verdicts}).to_dict(), **fields}


def test_the_weakest_attack_has_the_highest_asr_ties_going_to_the_lower_refusal():
    half = {"gcg": [(True, False), (False, True)], "pair": [(True, False), (False, False)]}
    board = Scoreboard.from_entries([entry(half)])
    assert [(row.asr, row.refusal) for row in board.rows] == [(0.5, 0.5), (0.5, 0.0)]
    assert board.weakest.attack == "pair"
    assert (
        Scoreboard.from_entries([entry({**half, "autodan": [(True, True), (True, True)]})]).weakest.attack == "autodan"
    )
    assert Scoreboard.from_dict(board.to_dict()) == board and board.to_dict()["weakest"] == "pair"
    row = board.rows[0]
    assert (row.harmless_kl, row.kl_note, row.budget, row.seed) == (None, "n/a (no intervention)", "cpu", 0)
    table = board.to_markdown()
    assert "| pair | 50% | 0% | n/a (no intervention) | cpu | 0 | 2 |" in table
    assert "Weakest attack: pair (ASR 50%, refusal 0%)." in table and "judge harm, κ=0.80 [0.70, 0.90]" in table
    refusal_only = entry({"gcg": [(True, True), (True, True)], "pair": [(False, False), (False, True)]})
    refusal_only["judges"] = {"substring": refusal_only["judges"]["substring"]}
    unranked = Scoreboard.from_entries([refusal_only])
    assert [row.asr for row in unranked.rows] == [None, None] and unranked.weakest.attack == "pair"
    assert "| gcg | – | 100% |" in unranked.to_markdown() and "ASR: no judge" in unranked.to_markdown()


def test_campaigns_of_one_checkpoint_join_and_bad_input_is_one_sentence():
    prompt, ablated = entry({"gcg": [(True, False)] * 2}), entry({"gcg": [(False, True)] * 2}, ablate="d0")
    assert [row.attack for row in Scoreboard.from_entries([prompt, ablated]).rows] == ["gcg", "gcg, d0 ablated"]
    with pytest.raises(DataError, match=r"^The row 'gcg' comes from both a and b; give each campaign once\.$"):
        Scoreboard.from_entries([prompt, prompt], ["a", "b"])
    with pytest.raises(DataError, match="b attacked other, not toy: a scoreboard is one checkpoint's"):
        Scoreboard.from_entries([prompt, entry({"pair": [(True, False)] * 2}, model="other")], ["a", "b"])
    with pytest.raises(DataError, match="a has no verdicts of the judge 'llm'"):
        Scoreboard.from_entries([prompt], ["a"], harm_judge="llm")
    with pytest.raises(SettingError, match="'substring' measures refusal, not harm; name a harm judge"):
        Scoreboard.from_entries([prompt], harm_judge="substring")
    with pytest.raises(SettingError, match="'harm' measures harm, not refusal; name a refusal judge"):
        Scoreboard.from_entries([prompt], refusal_judge="harm")  # before: the substring verdicts under its name
    with pytest.raises(SettingError, match="at least one attack directory"):
        scoreboard([])


def test_attack_jobs_report_the_scoreboard_and_the_script_joins_their_directories(
    toy, toy_dir, dim, harm_judge, tmp_path, capsys
):
    checkpoint = tmp_path / "round-1"
    shutil.copytree(toy_dir, checkpoint)
    DirectionSet([random_like(dim, 5), dim]).save(checkpoint / "directions.safetensors")
    common = dict(model=str(checkpoint), behaviours="harmful", split="train", n=2, judges=f"{harm_judge},substring")
    prompt, whitebox = tmp_path / "prompt", tmp_path / "whitebox"
    run(AttackSettings(**common, attacks="tests.test_campaign:SwapAttack", max_new_tokens=4, out=str(prompt)))
    report = run(
        AttackSettings(**common, attacks="directions", max_new_tokens=8, dtype="float32", out=str(whitebox)),
        progress=False,
    )
    assert report.data["scoreboard"]["weakest"] == "directions d1"
    page = (whitebox / "report.html").read_text()
    assert "Robustness scoreboard" in page and 'data-key="scoreboard.rows.2.harmless_kl"' in page
    data = json.loads((whitebox / "report.json").read_text())
    cells = page_numbers(page).cells
    assert len([key for key in cells if key.startswith("scoreboard.rows.")]) == 3 * 6
    assert all(lookup(data, key) == value for key, value in cells.items())
    assert "Weakest attack: directions d1" in report.summary()

    analysis_script("scoreboard_table").main([f"round 1={prompt},{whitebox}"])
    out = capsys.readouterr().out
    assert "### round 1" in out and "| directions all | 100% | 0% | 0." in out
    assert "| tests.test_campaign:SwapAttack | " in out and "n/a (no intervention) | cpu | 0 | 2 |" in out
    boards = json.loads(out.strip().splitlines()[-1])
    assert [row["attack"] for row in boards["round 1"]["rows"]][1:] == [
        "directions d0",
        "directions d1",
        "directions all",
    ]

    for argv, message in [
        ([f"x={tmp_path}"], f"x: No report.json in {tmp_path}; pass the --out directory of a finished attack job."),
        (["x="], "'x=' is not NAME=DIR"),
        ([f"x={prompt}", "--judge", "nope"], "has no verdicts of the judge 'nope'"),
    ]:
        with pytest.raises(SystemExit):
            analysis_script("scoreboard_table").main(argv)
        assert message in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text(json.dumps({"models": []}))
    with pytest.raises(DataError, match="holds no attack results"):
        scoreboard([tmp_path / "broken"])
    with pytest.raises(MissingFileError, match="No report.json"):
        scoreboard([tmp_path / "missing"])
