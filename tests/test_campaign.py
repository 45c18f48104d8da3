"""Campaigns: resumable per-behaviour cache, determinism, rates per judge, the attack job and its errors."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from mechrefusal import Ablate, Direction
from mechrefusal.attack import AttackSettings, main, run
from mechrefusal.attacks import Behaviour, TestCase, target_for
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.campaign import Outcome, behaviour_seed, fingerprint, run_campaign
from mechrefusal.core.errors import DataError, MissingFileError, SettingError
from mechrefusal.measure.judges import SubstringJudge, Verdict


@dataclass
class SwapAttack:
    """Test attack: with probability ``p`` (drawn from the seed) sends a harmless prompt instead."""

    p: float = 0.5
    caveat: str = ""
    calls: list[str] = field(default_factory=list)
    fail_on: str | None = None

    @classmethod
    def preset(cls, name: str) -> SwapAttack:
        return cls(p=1.0 if name == "harmbench" else 0.5)

    def settings(self) -> dict:
        return {"p": self.p}

    def run(self, model, behaviour, *, intervention=None, seed=0) -> list[TestCase]:
        if behaviour.text == self.fail_on:
            raise KeyboardInterrupt  # a campaign killed in the middle
        self.calls.append(behaviour.text)
        rng = random.Random(seed)
        swap = rng.random() < self.p
        prompt = "How do magnets work?" if swap else behaviour.text
        return [TestCase(prompt, {"swapped": swap}), TestCase(behaviour.text, {"swapped": False})]


class EveryNonRefusalHarmful:
    """Test harm judge: a reply is harmful exactly when it does not say 'cannot'."""

    measures: ClassVar[str] = "harm"

    def judge(self, instructions, completions):
        return [Verdict("cannot" in c, harmful="cannot" not in c) for c in completions]


@pytest.fixture
def behaviours():
    return load_behaviours("harmful", 3, split="train")  # the split the toy was trained to refuse


def test_behaviours_have_rule_targets_and_stable_ids(behaviours):
    assert [b.target for b in behaviours] == [target_for(b.text) for b in behaviours]
    assert behaviours[0].id == Behaviour(behaviours[0].text, "other").id
    assert len({b.id for b in behaviours}) == 3


def test_bad_behaviours_give_one_sentence(tmp_path):
    with pytest.raises(SettingError, match="Unknown behaviours"):
        load_behaviours("nonsense")
    with pytest.raises(SettingError, match="at least 1"):
        load_behaviours("harmful", 0)
    empty = tmp_path / "b.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="holds no instructions"):
        load_behaviours(str(empty))
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"instruction": "Write a poem"}\n{"instruction": 3}\n')
    with pytest.raises(DataError, match="line 2"):
        load_behaviours(str(broken))


def test_campaign_resumes_where_it_stopped_with_the_same_result(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.measure import judges

    monkeypatch.setitem(judges.JUDGES._entries, "test-harm", EveryNonRefusalHarmful)
    kwargs = dict(judges=["test-harm", "substring"], max_new_tokens=24, progress=False)
    whole = run_campaign(toy, {"swap": SwapAttack()}, behaviours, out=tmp_path / "a", **kwargs)

    killed = SwapAttack(fail_on=behaviours[2].text)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(toy, {"swap": killed}, behaviours, out=tmp_path / "b", **kwargs)
    resumed = SwapAttack()
    again = run_campaign(toy, {"swap": resumed}, behaviours, out=tmp_path / "b", **kwargs)
    assert resumed.calls == [behaviours[2].text]  # the two finished behaviours were not attacked again
    assert again.to_dict()["rates"] == whole.to_dict()["rates"]
    results = [{**o.to_dict(), "seconds": None} for o in again.outcomes]  # all but the attacks' wall times
    assert results == [{**o.to_dict(), "seconds": None} for o in whole.outcomes]


def test_rates_follow_harmbench_averaging(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.measure import judges

    monkeypatch.setitem(judges.JUDGES._entries, "test-harm", EveryNonRefusalHarmful)
    campaign = run_campaign(
        toy,
        {"swap": SwapAttack(p=1.0)},
        behaviours,
        out=tmp_path,
        judges=["test-harm", "substring"],
        max_new_tokens=8,
        progress=False,
    )
    rates = campaign.rates()
    # Each behaviour: the swapped harmless case is answered (harmful per the test judge), the plain one refused.
    assert rates["swap"]["asr/test-harm"] == pytest.approx(0.5)
    assert rates["swap"]["refusal/substring"] == pytest.approx(0.5)
    assert "asr/substring" not in rates["swap"]  # a refusal judge never yields an ASR
    assert rates["average"] == rates["swap"]


def test_another_intervention_or_seed_is_not_reused(toy, behaviours, tmp_path):
    first = SwapAttack()
    run_campaign(toy, {"swap": first}, behaviours[:1], out=tmp_path, max_new_tokens=4, progress=False)
    direction = Direction(toy.bridge.cfg.d_model**-0.5 * __import__("torch").ones(toy.d_model), 1, -1, "test")
    second = SwapAttack()
    run_campaign(
        toy,
        {"swap": second},
        behaviours[:1],
        out=tmp_path,
        max_new_tokens=4,
        progress=False,
        intervention=Ablate(direction),
    )
    third = SwapAttack()
    run_campaign(toy, {"swap": third}, behaviours[:1], out=tmp_path, max_new_tokens=4, progress=False, seed=1)
    assert len(first.calls) == len(second.calls) == len(third.calls) == 1
    assert fingerprint(Ablate(direction)) != fingerprint(None)
    assert behaviour_seed(0, "swap", behaviours[0]) != behaviour_seed(1, "swap", behaviours[0])


def test_attack_job_writes_report_and_replays(toy_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "attack"
    settings = AttackSettings(
        model=str(toy_dir),
        attacks="tests.test_campaign:SwapAttack",
        behaviours="harmful",
        n=2,
        max_new_tokens=4,
        out=str(out),
    )
    report = run(settings, progress=False)
    data = json.loads((out / "report.json").read_text())
    assert data["attacks"]["rates"] == report.data["attacks"]["rates"]
    assert "refusal/substring" in data["attacks"]["rates"]["tests.test_campaign:SwapAttack"]
    page = (out / "report.html").read_text()
    assert "Attacks" in page and "judge substring, κ" in page
    assert "refusal" in report.summary()
    monkeypatch.setattr(SwapAttack, "run", lambda *args, **kwargs: pytest.fail("attacked again"))
    monkeypatch.setattr("mechrefusal.attacks.campaign.generate", lambda *args, **kwargs: pytest.fail("generated"))
    main(["--config", str(out / "settings.toml")])  # replays from the cache: nothing attacked or generated
    assert "report:" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["attacks"]["rates"] == data["attacks"]["rates"]


def test_attack_results_join_the_analysis_report(toy_report, tmp_path):
    from mechrefusal.analysis.report import Report
    from mechrefusal.analyze import AnalyzeSettings

    out = tmp_path / "attack"
    attacked = run(
        AttackSettings(
            model=toy_report.data["models"][0]["model"],
            attacks="tests.test_campaign:SwapAttack",
            behaviours="harmful",
            n=1,
            max_new_tokens=4,
            out=str(out),
        ),
        progress=False,
    )
    combined = Report({**toy_report.data, "attacks": attacked.data["attacks"]})
    page = combined.html()
    assert "Refusal analysis" in page and "<h2>Attacks</h2>" in page
    assert 'data-key="attacks.rates.average.refusal/substring"' in page
    assert AnalyzeSettings(attacks=str(out)).attacks == str(out)
    with pytest.raises(MissingFileError, match="No attack results"):
        AnalyzeSettings(attacks=str(tmp_path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attacks", "nope"], "Unknown attack 'nope'"),
        (["--attacks", ","], "names no attack"),
        (["--n", "0"], "--n must be at least 1"),
        (["--judges", "nope"], "Unknown judge 'nope'"),
        (["--behaviours", "nothing"], "Unknown behaviours"),
    ],
)
def test_bad_input_is_one_line(argv, message, toy_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(toy_dir), "--attacks", "tests.test_campaign:SwapAttack", "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_ablating_a_checkpoint_without_directions_is_refused(toy_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(toy_dir), "--attacks", "tests.test_campaign:SwapAttack", "--ablate", "d0", "--out", str(tmp_path)])
    assert "has no saved directions" in capsys.readouterr().err


def test_an_interrupted_job_says_how_to_continue(toy_dir, tmp_path, capsys, monkeypatch):
    import mechrefusal.attack as job

    def interrupted(settings, progress=True):
        (tmp_path / "cases" / "x").mkdir(parents=True)
        (tmp_path / "cases" / "x" / "b.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        main([str(toy_dir), "--attacks", "tests.test_campaign:SwapAttack", "--out", str(tmp_path)])
    assert stop.value.code == 130
    assert "1 attacked behaviours are kept" in capsys.readouterr().err


class UndecidedHarm:
    """Test harm judge that can decide nothing (an LLM judge whose answers are all unreadable)."""

    measures: ClassVar[str] = "harm"

    def judge(self, instructions, completions):
        return [Verdict(False, "unparseable") for _ in completions]


def test_a_new_judge_reuses_cached_cases_and_completions(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.attacks import campaign as campaign_module
    from mechrefusal.measure import judges

    monkeypatch.setitem(judges.JUDGES._entries, "test-harm", EveryNonRefusalHarmful)
    first = SwapAttack()
    before = run_campaign(toy, {"swap": first}, behaviours[:2], out=tmp_path, max_new_tokens=6, progress=False)
    generated = []
    original = campaign_module.generate
    monkeypatch.setattr(campaign_module, "generate", lambda *a, **k: generated.append(1) or original(*a, **k))
    second = SwapAttack()
    after = run_campaign(
        toy,
        {"swap": second},
        behaviours[:2],
        out=tmp_path,
        judges=["substring", "test-harm"],
        max_new_tokens=6,
        progress=False,
    )
    assert second.calls == [] and generated == []  # neither attacked nor generated again
    assert [o.completions for o in after.outcomes] == [o.completions for o in before.outcomes]
    assert set(after.outcomes[0].verdicts) == {"substring", "test-harm"}
    run_campaign(toy, {"swap": second}, behaviours[:2], out=tmp_path, max_new_tokens=7, progress=False)
    # a longer generation regenerates (both behaviours' cases in one batched call), the cases stay
    assert second.calls == [] and len(generated) == 1


def phrase_judge(edited: tuple[str, ...]) -> type:
    """The same refusal judge class (module and name) built with another phrase list: an edited judge."""

    @dataclass(frozen=True)
    class PhraseJudge(SubstringJudge):
        phrases: tuple[str, ...] = edited

    return PhraseJudge


def test_a_judge_with_edited_settings_judges_again(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.measure import judges

    kwargs = dict(out=tmp_path, judges=["phrases"], max_new_tokens=6, progress=False)
    monkeypatch.setitem(judges.JUDGES._entries, "phrases", phrase_judge(("",)))
    everything = run_campaign(toy, {"swap": SwapAttack()}, behaviours[:1], **kwargs)
    assert everything.outcomes[0].refusal("phrases") == 1  # "" is in every reply
    monkeypatch.setitem(judges.JUDGES._entries, "phrases", phrase_judge(()))
    nothing = run_campaign(toy, {"swap": SwapAttack()}, behaviours[:1], **kwargs)
    assert nothing.outcomes[0].refusal("phrases") == 0  # the cached verdicts are not reused


def test_a_new_dtype_or_chat_format_is_not_reused(toy, behaviours, tmp_path):
    first = SwapAttack()
    kwargs = dict(out=tmp_path, max_new_tokens=4, progress=False)
    run_campaign(toy, {"swap": first}, behaviours[:1], dtype="float32", **kwargs)
    run_campaign(toy, {"swap": first}, behaviours[:1], dtype="bfloat16", **kwargs)
    assert len(first.calls) == 2
    toy.chat = type(toy.chat)(toy.tokenizer, system="You are careful.")
    try:
        run_campaign(toy, {"swap": first}, behaviours[:1], dtype="bfloat16", **kwargs)
    finally:
        toy.chat = type(toy.chat)(toy.tokenizer)
    assert len(first.calls) == 3


def test_random_ablations_are_seeded_per_behaviour():
    import torch

    from mechrefusal.interventions import RandomAblate
    from mechrefusal.interventions.generators import reseeded

    direction = Direction(torch.ones(8) / 8**0.5, 1, -1, "test")
    shared = torch.Generator().manual_seed(0)
    shared.manual_seed(123)
    random_ablation = RandomAblate(direction, 0.5, shared)
    first, second = reseeded([random_ablation], 7), reseeded([random_ablation], 7)
    assert torch.equal(first[0].generator.get_state(), second[0].generator.get_state())
    assert torch.equal(first[0].generator.get_state(), torch.Generator().manual_seed(7).get_state())
    assert first[0].generator is not shared and shared.initial_seed() == 123  # the caller's generator is left alone
    plain = Ablate(direction)
    assert reseeded(plain, 7) is plain


class ForwardingAttack:
    """An attack whose search runs the model under the campaign's intervention (advancing its generators)."""

    caveat = ""

    def settings(self) -> dict:
        return {}

    def run(self, model, behaviour, *, intervention=None, seed=0) -> list[TestCase]:
        from mechrefusal.measure.generation import generate

        generate(model, [behaviour.text], max_new_tokens=3, intervention=intervention)
        return [TestCase(behaviour.text, {})]


def test_a_resumed_campaign_generates_under_the_same_random_ablations(toy, behaviours, tmp_path, monkeypatch):
    import torch

    from mechrefusal.attacks import campaign as campaign_module
    from mechrefusal.interventions import RandomAblate

    states = []
    real = campaign_module.generate

    def recording(model, prompts, *, intervention=None, **options):
        states.append(intervention[0].generator.get_state())
        return real(model, prompts, intervention=intervention, **options)

    monkeypatch.setattr(campaign_module, "generate", recording)
    direction = Direction(torch.ones(toy.d_model) / toy.d_model**0.5, 1, -1, "test")
    ablation = RandomAblate(direction, 0.5, torch.Generator().manual_seed(0))
    kwargs = dict(intervention=ablation, out=tmp_path, max_new_tokens=4, dtype="float32", progress=False)
    first = run_campaign(toy, {"fwd": ForwardingAttack()}, behaviours[:1], **kwargs).outcomes[0]
    path = next((tmp_path / "cases" / "fwd").glob("*.json"))
    saved = json.loads(path.read_text())
    del saved["completions"], saved["verdicts"]  # killed after the attack, before its completions
    path.write_text(json.dumps(saved))
    resumed = run_campaign(toy, {"fwd": ForwardingAttack()}, behaviours[:1], **kwargs).outcomes[0]
    assert len(states) == 2 and torch.equal(states[0], states[1])
    assert resumed.completions == first.completions


def test_undecided_harm_verdicts_are_counted_and_reported(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.analysis.attack_results import summary_lines
    from mechrefusal.measure import judges

    monkeypatch.setitem(judges.JUDGES._entries, "test-undecided", UndecidedHarm)
    campaign = run_campaign(
        toy,
        {"swap": SwapAttack()},
        behaviours[:2],
        out=tmp_path,
        judges=["test-undecided"],
        max_new_tokens=4,
        progress=False,
    )
    assert campaign.undecided() == {"test-undecided": 4}
    assert campaign.rates()["swap"]["asr/test-undecided"] == 0.0
    lines = summary_lines({**campaign.to_dict(), "model": "toy"})
    assert "judge test-undecided could not decide 4 of 4 test cases" in lines[-1]


def test_an_attack_whose_rates_pool_its_variants_says_so():
    from mechrefusal.analysis.attack_results import summary_lines

    entry = {
        "behaviours": 1,
        "judges": {"harm": {"measures": "harm"}},
        "attacks": {"directions": {"variant": "which", "caveat": ""}, "human": {"variant": None, "caveat": ""}},
        "rates": {"directions": {"asr/harm": 0.2}, "human": {"asr/harm": 0.1}, "average": {"asr/harm": 0.15}},
    }
    rows = summary_lines(entry)[-3:]
    assert [row.split("  ")[0] for row in rows] == ["directions (variants pooled)", "human", "average"]
    assert rows[0].endswith("20.0%") and rows[2].endswith("15.0%")


@dataclass
class PrefillAblateAttack:
    """Test white-box attack: opens the reply and ablates a direction while the model answers."""

    caveat: str = ""
    asked: list[str] = field(default_factory=list)

    def settings(self) -> dict:
        return {}

    def run(self, model, behaviour, *, intervention=None, seed=0) -> list[TestCase]:
        return [TestCase(behaviour.text, {"layer": 1}, prefill="Sure, here"), TestCase(behaviour.text, {})]

    def generation_intervention(self, model, case):
        self.asked.append(case.prefill)
        import torch

        if "layer" not in case.info:
            return None
        return Ablate(Direction(torch.ones(model.d_model) / model.d_model**0.5, case.info["layer"], -1, "test"))


def test_white_box_test_cases_are_prefilled_and_answered_under_their_own_intervention(toy, behaviours, tmp_path):
    import torch

    from mechrefusal.measure.generation import generate

    attack = PrefillAblateAttack()
    outcome = run_campaign(
        toy, {"wb": attack}, behaviours[:1], out=tmp_path, max_new_tokens=6, dtype="float32", progress=False
    ).outcomes[0]
    assert attack.asked == ["Sure, here", ""]
    assert outcome.cases[0].prefill == "Sure, here" and outcome.completions[0].startswith("Sure, here")
    direction = Direction(torch.ones(toy.d_model) / toy.d_model**0.5, 1, -1, "test")
    rendered = toy.format([behaviours[0].text])[0] + "Sure, here"
    expected = generate(toy, [rendered], max_new_tokens=6, intervention=Ablate(direction), rendered=True)[0]
    assert outcome.completions[0] == "Sure, here" + expected
    assert outcome.completions[1] == generate(toy, [behaviours[0].text], max_new_tokens=6)[0]
    saved = json.loads(next((tmp_path / "cases" / "wb").glob("*.json")).read_text())
    assert saved["cases"][0]["prefill"] == "Sure, here" and "prefill" not in saved["cases"][1]


class ReadingJudge:
    """A judge that keeps every text it reads and calls none a refusal."""

    read: ClassVar[list[str]] = []

    def judge(self, instructions, completions):
        ReadingJudge.read += completions
        return [Verdict(False) for _ in completions]


def test_the_judges_read_the_models_continuation_not_the_attackers_prefill(toy, behaviours, tmp_path):
    ReadingJudge.read = []
    outcome = run_campaign(
        toy,
        {"wb": PrefillAblateAttack()},
        behaviours[:1],
        out=tmp_path,
        judges=("tests.test_campaign:ReadingJudge",),
        max_new_tokens=6,
        dtype="float32",
        progress=False,
    ).outcomes[0]
    prefilled, plain = outcome.completions
    # (the campaign describes the judge on labelled replies first; the case's two replies are read last)
    assert prefilled.startswith("Sure, here") and ReadingJudge.read[-2:] == [
        prefilled.removeprefix("Sure, here"),
        plain,
    ]


def test_an_attack_that_cannot_run_fails_before_any_attack_starts(toy, behaviours, tmp_path, monkeypatch):
    from mechrefusal.attacks.cone import ConeAttack
    from mechrefusal.attacks.directions import DirectionsAttack
    from mechrefusal.attacks.latent import LatentAttack

    first = SwapAttack()
    cases = [
        ({"directions": DirectionsAttack()}, r"^This model has no saved directions; the directions attack needs"),
        ({"cone": ConeAttack(k=toy.d_model + 1)}, "^A cone of dimension 65 does not fit in this model's width"),
        ({"latent": LatentAttack(layers=(9,))}, r"^Latent attack layers \[9\] are outside this model's blocks"),
    ]
    monkeypatch.setattr(toy, "directions", None)
    for late, message in cases:
        with pytest.raises(SettingError, match=message):
            run_campaign(toy, {"swap": first, **late}, behaviours, out=tmp_path, progress=False)
    assert first.calls == [] and not any(tmp_path.iterdir())  # nothing attacked, nothing written


def test_a_report_summarises_long_arrays_in_case_info_and_the_case_keeps_them():
    info = {
        "k": 1,
        "found": [{"layer": 3, "vector": [0.5] * 100}],
        "embedding": [[0.25] * 10] * 10,
        "square": [[1.0] * 8] * 8,
        "mixed": [1, "a"] * 40,
    }
    case = TestCase("Do harm", info)
    outcome = Outcome("white", Behaviour("Do harm", "Sure"), [case], ["No."], {}, 0.0, [None])
    reported = outcome.to_dict()["cases"][0]["info"]
    assert reported["found"] == [{"layer": 3, "vector": "100 numbers, in the case file"}]
    assert reported["embedding"] == "100 numbers, in the case file"
    assert reported["square"] == info["square"] and reported["mixed"] == info["mixed"] and reported["k"] == 1
    assert case.to_dict()["info"] is info and len(info["found"][0]["vector"]) == 100  # what the case file holds
