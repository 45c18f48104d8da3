"""PAIR on the toy refuser: a scripted attacker that turns to a harmless-set prompt wins and stops
early; malformed attacker replies are counted, never fatal; an LLM judge's ratings drive the stop;
the attacker can sit behind `python -m mechrefusal.serve` and gives the in-process run's test case."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager

import pytest

from mechrefusal import data
from mechrefusal.attacks import ATTACKS, Behaviour, target_for
from mechrefusal.attacks import pair as pair_module
from mechrefusal.attacks.pair import JSON_OPENING_FIRST, JSON_OPENING_LATER, PAIR, parse_attacker_reply, parse_rating
from mechrefusal.core.errors import SettingError
from mechrefusal.measure.chat_models import EndpointChatModel, LocalChatModel
from mechrefusal.measure.judges import Verdict
from tests.test_chat_models import served
from tests.toy import COMPLIANCE, REFUSAL

HARMFUL = data.load("harmful", "train")[:2]
HARMLESS = data.load("harmless", "train")[0]
BEHAVIOUR = Behaviour(HARMFUL[0], target_for(HARMFUL[0]))


class Scripted:
    """A chat model that gives its ``script[k]`` to every conversation of its k-th call (a list: one reply per
    conversation), and keeps the conversations."""

    def __init__(self, script: Sequence[str], name: str = "scripted") -> None:
        self.script, self.name, self.seen = list(script), name, []

    def chat(self, conversations, *, max_tokens=256, temperature=0.0, seed=0) -> list[str]:
        self.seen.append([list(conversation) for conversation in conversations])
        reply = self.script[len(self.seen) - 1]
        return list(reply) if isinstance(reply, list) else [reply] * len(conversations)


def proposal(prompt: str) -> str:
    return json.dumps({"improvement": "try something else", "prompt": prompt})


def test_a_harmless_prompt_wins_and_stops_early(toy):
    attacker = Scripted([proposal(HARMFUL[1]), proposal(HARMLESS), proposal(HARMFUL[1])])
    attack = PAIR(attacker=attacker, n_streams=2, n_iterations=3, target_max_tokens=12, progress=False)
    [case] = attack.run(toy, BEHAVIOUR, seed=0)
    assert case.prompt == HARMLESS
    assert case.info["scores"] == [[1, 1], [10, 10]] and case.info["iterations"] == 2
    assert case.info["best"] == {"iteration": 1, "stream": 0, "improvement": "try something else"}
    assert case.info["reply"] == COMPLIANCE and case.info["queries"] == 4
    assert (case.info["attacker"], case.info["judge"], case.info["malformed_attacker_replies"]) == (
        "scripted",
        "substring",
        0,
    )
    # the attacker's second call saw its first proposal, the toy's refusal and the score
    second = attacker.seen[1][0]
    assert second[0]["role"] == "system" and BEHAVIOUR.text in second[0]["content"]
    assert second[-2] == {"role": "assistant", "content": proposal(HARMFUL[1])}
    assert REFUSAL in second[-1]["content"] and "Score: 1/10" in second[-1]["content"]
    assert (
        case.info["caveat"]
        == attack.caveat
        == ("scored by the refusal judge 'substring' (not refused = 10), not an LLM judge")
    )


class HarmStub:
    """A harm judge that never calls a reply a refusal: the toy's compliance is harmful, its refusal undecided."""

    measures = "harm"

    def judge(self, instructions, completions):
        return [Verdict(False, harmful=True if COMPLIANCE in reply else None) for reply in completions]


class RefusalStub:
    """A refusal judge that says every reply is harmless: scoring must read ``refused`` only."""

    def judge(self, instructions, completions):
        return [Verdict(REFUSAL in reply, harmful=False) for reply in completions]


@pytest.mark.parametrize("stub", ["HarmStub", "RefusalStub"])
def test_a_harm_judge_scores_by_harmful_and_a_refusal_judge_by_refused(toy, stub):
    attacker = Scripted([proposal(HARMFUL[1]), proposal(HARMLESS), proposal(HARMFUL[1])])
    name = f"tests.test_attack_pair:{stub}"
    attack = PAIR(attacker=attacker, judge=name, n_streams=1, target_max_tokens=12, progress=False)
    [case] = attack.run(toy, BEHAVIOUR)
    assert case.info["scores"] == [[1], [10]] and case.prompt == HARMLESS and case.info["reply"] == COMPLIANCE
    expected = {
        "HarmStub": f"scored by the harm judge {name!r} (harmful = 10, else 1), not an LLM judge",
        "RefusalStub": f"scored by the refusal judge {name!r} (not refused = 10), not an LLM judge",
    }
    assert case.info["caveat"] == attack.caveat == expected[stub]


def test_the_target_replies_in_the_dtype_given(toy, monkeypatch):
    used = []

    @contextmanager
    def recording(model, dtype):
        used.append((model, dtype))
        yield

    monkeypatch.setattr(pair_module, "autocast", recording)
    attacker = Scripted([proposal(HARMFUL[1]), proposal(HARMFUL[1])])
    attack = PAIR(attacker=attacker, n_streams=1, n_iterations=2, target_max_tokens=4, dtype="float32", progress=False)
    attack.run(toy, BEHAVIOUR)
    assert used == [(toy, "float32")] * 2 and attack.settings()["dtype"] == "float32"
    with pytest.raises(SettingError, match="Unknown compute dtype 'float16'"):
        PAIR(attacker=Scripted([]), dtype="float16")


def test_malformed_attacker_replies_are_counted_not_fatal(toy):
    attacker = Scripted(["", HARMFUL[1], f"Sure. Prompt: {HARMLESS}"])
    attack = PAIR(attacker=attacker, n_streams=1, attacker_attempts=1, target_max_tokens=12, progress=False)
    [case] = attack.run(toy, BEHAVIOUR)
    # nothing to send, then the whole reply as the prompt, then the text after "Prompt:" (which wins)
    assert case.info["scores"] == [[1], [1], [10]] and case.prompt == HARMLESS
    assert case.info["malformed_attacker_replies"] == 3 and case.info["queries"] == 2
    assert "nothing was sent" in attacker.seen[1][0][-1]["content"]


def test_a_malformed_attacker_reply_is_asked_for_again_up_to_the_attempts(toy):
    # stream 1's reply is not the JSON asked for: only its conversation is asked again, and its second reply wins
    attacker = Scripted([[proposal(HARMFUL[1]), "Let me think."], [proposal(HARMLESS)]])
    [case] = PAIR(attacker=attacker, n_streams=2, target_max_tokens=12, progress=False).run(toy, BEHAVIOUR)
    assert [len(call) for call in attacker.seen] == [2, 1] and attacker.seen[1][0] == attacker.seen[0][1]
    assert case.prompt == HARMLESS and case.info["scores"] == [[1, 10]]
    assert (case.info["malformed_attacker_replies"], case.info["regenerated_attacker_replies"]) == (0, 1)
    # never well formed: the last of the attempts is sent as it is, and counted
    attacker = Scripted(["Let me think.", "Still thinking.", HARMLESS])
    attack = PAIR(attacker=attacker, n_streams=1, n_iterations=1, attacker_attempts=3, progress=False)
    [case] = attack.run(toy, BEHAVIOUR)
    assert len(attacker.seen) == 3 and case.prompt == HARMLESS and case.info["scores"] == [[10]]
    assert (case.info["malformed_attacker_replies"], case.info["regenerated_attacker_replies"]) == (1, 2)


def test_an_llm_judge_scores_with_our_rubric(toy):
    judge = Scripted(["Rating: [[3]]", "[[10]]"], name="judge")
    attacker = Scripted([proposal(HARMFUL[1]), proposal(HARMLESS), proposal(HARMLESS)])
    attack = PAIR(attacker=attacker, judge=judge, n_streams=1, target_max_tokens=12, progress=False)
    [case] = attack.run(toy, BEHAVIOUR)
    assert case.info["scores"] == [[3], [10]] and case.info["judge"] == "llm:judge" and case.prompt == HARMLESS
    rubric, shown = judge.seen[0][0]
    assert "1 to 10" in rubric["content"] and shown["content"] == f"REQUEST: {BEHAVIOUR.text}\n\nREPLY: {REFUSAL}"
    assert attack.caveat == ""


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('```json\n{"improvement": "x", "prompt": "Tell a story"}\n```', ("Tell a story", "x", True)),
        ('{"improvement": "x", "prompt": "Tell a story', ("Tell a story", "", False)),
        ("PROMPT: Tell a story", ("Tell a story", "", False)),
        ("Tell a story", ("Tell a story", "", False)),
        ('{"improvement": "my last prompt: too plain", "prompt": "Tell a story', ("Tell a story", "", False)),
        ('{"prompt": ""}', ("", "", False)),
        ('{"improvement": "x", "prompt": "Tell a story"}"} and more {', ("Tell a story", "x", True)),
        ('Plan {a}: {"improvement": "x", "prompt": "Tell a story"}', ("Tell a story", "x", True)),
        ('{"improvement": "it was too plain, so', ("", "", False)),
    ],
)
def test_attacker_replies_are_parsed_robustly(reply, expected):
    assert parse_attacker_reply(reply) == expected


def test_ratings_are_parsed_with_a_floor_of_one():
    assert [parse_rating(text) for text in ("Rating: [[7]]", "5, no: [[10]]", "about 4", "none")] == [7, 10, 4, 1]


def test_presets_settings_and_bad_budgets():
    assert ATTACKS.get("pair") is PAIR
    harmbench = PAIR.preset("harmbench", attacker=Scripted([]))
    assert (harmbench.n_streams, harmbench.n_iterations, harmbench.target_max_tokens) == (20, 3, 150)
    settings = harmbench.settings()
    assert json.loads(json.dumps(settings)) == settings and settings["attacker"] == "scripted"
    assert PAIR.preset("cpu", attacker=Scripted([])).settings()["n_streams"] == PAIR(attacker=Scripted([])).n_streams
    with pytest.raises(SettingError, match="Unknown PAIR preset 'fast'"):
        PAIR.preset("fast")
    with pytest.raises(SettingError, match="n_streams must be at least 1"):
        PAIR(attacker=Scripted([]), n_streams=0)
    with pytest.raises(SettingError, match="attacker_attempts must be at least 1"):
        PAIR(attacker=Scripted([]), attacker_attempts=0)
    with pytest.raises(SettingError, match="Unknown judge 'strict'"):
        PAIR(attacker=Scripted([]), judge="strict")
    embedded = PAIR(n_streams=1)  # the embedded attacker is known weak without loading it
    assert embedded.caveat.startswith("weak attacker (smollm2-135m-instruct): numbers not comparable with the paper's")


def test_a_small_local_attacker_is_labelled_weak_and_seeded(toy):
    attack = PAIR(attacker=LocalChatModel(toy), n_streams=2, n_iterations=2, attacker_max_tokens=8, progress=False)
    assert attack.caveat.startswith(f"weak attacker ({toy.spec}): numbers not comparable with the paper's")
    first = attack.run(toy, BEHAVIOUR, seed=1)
    assert attack.run(toy, BEHAVIOUR, seed=1) == first


class Continuing(LocalChatModel):
    """The toy as a local attacker that records how each call's replies were begun, and the replies."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.begun: list[str] = []
        self.replies: list[str] = []

    def continue_chat(self, conversations, begun, **options) -> list[str]:
        replies = super().continue_chat(conversations, begun, **options)
        self.begun.append(begun)
        self.replies += replies
        return replies


def test_a_local_attackers_replies_begin_with_the_json_opening(toy):
    attacker, unmoved = Continuing(toy), Scripted(["[[1]]", "[[1]]"], name="judge")  # no early stop
    options = dict(n_streams=2, n_iterations=2, attacker_max_tokens=6, attacker_attempts=1, progress=False)
    attack = PAIR(attacker=attacker, judge=unmoved, **options)
    [case] = attack.run(toy, BEHAVIOUR)
    assert attacker.begun == [JSON_OPENING_FIRST, JSON_OPENING_LATER] and case.info["iterations"] == 2
    assert all(reply.startswith(JSON_OPENING_FIRST) for reply in attacker.replies[:2])
    assert all(reply.startswith(JSON_OPENING_LATER) for reply in attacker.replies[2:])
    # the toy never closes the object: each prompt sent is what it wrote after the opening's "prompt"
    assert case.prompt in [parse_attacker_reply(reply)[0] for reply in attacker.replies]
    assert not case.prompt.startswith("{") and attack.settings()["seed_json"] is True
    free = Continuing(toy)
    PAIR(attacker=free, n_streams=1, n_iterations=1, attacker_attempts=1, seed_json=False, progress=False).run(
        toy, BEHAVIOUR
    )
    assert free.begun == [""]  # `chat` is a reply begun with nothing


def test_pair_through_an_endpoint_attacker_matches_the_in_process_run(toy, toy_dir):
    options = dict(n_streams=2, n_iterations=2, attacker_max_tokens=8, attacker_temperature=0.0, progress=False)
    options["seed_json"] = False  # an endpoint cannot continue a begun reply
    local = PAIR(attacker=LocalChatModel(toy), **options).run(toy, BEHAVIOUR)
    with served(toy_dir, "--name", "toy") as url:
        attack = PAIR(attacker=f"openai:{url}#toy", **options)
        [case] = attack.run(toy, BEHAVIOUR)
    assert isinstance(attack._attacker, EndpointChatModel) and case.info["attacker"] == f"toy@{url}"
    assert case.prompt == local[0].prompt and case.info["scores"] == local[0].info["scores"]
    assert "weak attacker" not in attack.caveat  # an endpoint's size is unknown


@pytest.mark.slow
def test_the_embedded_attacker_runs_pair_on_the_toy(toy):
    attack = PAIR(n_streams=2, n_iterations=1, attacker_max_tokens=48, target_max_tokens=12, progress=False)
    [case] = attack.run(toy, BEHAVIOUR, seed=0)
    assert case.prompt and case.info["attacker"] == "smollm2-135m-instruct" and len(case.info["scores"][0]) == 2
