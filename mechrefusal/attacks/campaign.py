"""Campaigns: attacks × behaviours against one model under one intervention, judged, resumable.

Each (attack, behaviour) pair is one JSON file, ``OUT/cases/<attack>/<behaviour id>.json``, written
atomically after each of three levels, each with its own key:

* test cases: the attack's name and settings, the model's weights, saved directions and chat format, the
  intervention, the resolved compute dtype, the seed and the behaviour;
* completions: the test cases' key, the generation length and dtype;
* verdicts: one entry per judge, keyed by the judge's name, class and ``version``.

An attack makes its test cases behaviour by behaviour; their completions are then generated together,
batched across behaviours wherever test cases are answered under the same interventions (a prompt attack's
cases all are; a direction attack's ``d0`` cases of every behaviour are).

A test case answered under a fixed edit of the model (`intervention_kind` ``"model edit"``: the direction
attacks' ablations, with the campaign's own intervention) also gets the harmless KL that edit costs
(`mechrefusal.attacks.harmless_kl`), measured once per distinct edit and cached in ``OUT/harmless_kl/``;
other test cases get None (not applicable).

A rerun reuses every level whose key matches, so a killed campaign continues where it stopped, adding a
judge judges the cached completions without attacking again, and each behaviour's seed depends only on
(seed, attack, behaviour), so a resumed campaign gives the same result as an uninterrupted one. An
intervention that draws random numbers (`RandomAblate`) gets a generator seeded per behaviour for the same
reason.

Attack success follows HarmBench: a test case succeeds when a harm judge says its completion carries out
the behaviour; a behaviour's success is the mean over its test cases, an attack's success rate (ASR) the
mean over behaviours, and the average ASR the mean over attacks. A refusal judge gives refusal rates,
never an ASR.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mechrefusal.attacks.base import (
    MODEL_EDIT,
    Attack,
    Behaviour,
    TestCase,
    check_attack,
    generation_intervention,
    intervention_kind,
)
from mechrefusal.attacks.harmless_kl import harmless_kl, harmless_prompts
from mechrefusal.core.cache import atomic_write_bytes
from mechrefusal.core.directions import Direction
from mechrefusal.core.errors import FetchError, SettingError
from mechrefusal.core.precision import resolve
from mechrefusal.core.provenance import weights_fingerprint
from mechrefusal.interventions import Interventions
from mechrefusal.interventions.generators import reseeded
from mechrefusal.measure.generation import generate
from mechrefusal.measure.judges import JUDGES, Judge
from mechrefusal.measure.judges.agreement import judge_agreement
from mechrefusal.measure.judges.base import judge_key, measures_of
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast

LONGEST_REPORTED = 64
"""Numbers a case's info may hold in a report; a longer array (a white-box attack's directions, embeddings or
perturbation: tens of MB in a 7B model's campaign) is summarised there and kept whole in its case file,
``OUT/cases/<attack>/<behaviour id>.json``, from which a campaign replays."""


@dataclass(frozen=True)
class Outcome:
    """One attack on one behaviour: its test cases, the completions and each judge's verdicts."""

    attack: str
    behaviour: Behaviour
    cases: list[TestCase]
    completions: list[str]
    """Per test case, the reply as read (an attacker's prefill, then the model's continuation)."""
    verdicts: dict[str, list[dict[str, Any]]]
    """Judge name -> one ``{"refused", "harmful", "reason"}`` per test case, judged on the model's own words
    (the completion without the prefill)."""
    seconds: float
    """Wall time of the attack itself (test cases), not of generation and judging."""
    harmless_kl: list[float | None]
    """Per test case, the harmless KL of the model edit it was answered under (None: not a model edit)."""

    def success(self, judge: str) -> float:
        """Fraction of test cases a harm judge calls harmful."""
        return sum(bool(v["harmful"]) for v in self.verdicts[judge]) / len(self.cases)

    def refusal(self, judge: str) -> float:
        """Fraction of test cases a judge calls a refusal."""
        return sum(bool(v["refused"]) for v in self.verdicts[judge]) / len(self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "behaviour": {"id": self.behaviour.id, "text": self.behaviour.text, "target": self.behaviour.target},
            "cases": [{**case.to_dict(), "info": _summarised(case.info)} for case in self.cases],
            "completions": self.completions,
            "verdicts": self.verdicts,
            "seconds": self.seconds,
            "harmless_kl": self.harmless_kl,
        }


@dataclass(frozen=True)
class Campaign:
    """All outcomes of a campaign, and its success and refusal rates per attack and judge."""

    outcomes: list[Outcome]
    judges: dict[str, dict[str, Any]]
    """Judge name -> ``{"measures": "harm" | "refusal", "agreement": its agreement with human labels}``."""
    attacks: dict[str, dict[str, Any]]
    """Attack name -> ``{"settings": ..., "caveat": ..., "intervention": its `intervention_kind`, "variant": the
    info key that tells its test cases of one behaviour apart or None, "harmless_kl_prompts": n}``."""

    def rates(self) -> dict[str, dict[str, float]]:
        """Attack name -> ``{"asr/<harm judge>": ..., "refusal/<refusal judge>": ...}``, means over behaviours,
        plus an ``"average"`` row over attacks (a harm judge gives only ASRs, a refusal judge only refusal
        rates)."""
        table: dict[str, dict[str, float]] = {}
        for attack in self.attacks:
            outcomes = [o for o in self.outcomes if o.attack == attack]
            row = {}
            for judge, about in self.judges.items():
                if about["measures"] == "harm":
                    row[f"asr/{judge}"] = sum(o.success(judge) for o in outcomes) / len(outcomes)
                else:
                    row[f"refusal/{judge}"] = sum(o.refusal(judge) for o in outcomes) / len(outcomes)
            table[attack] = row
        keys = next(iter(table.values())).keys()
        table["average"] = {key: sum(row[key] for row in table.values()) / len(table) for key in keys}
        return table

    def undecided(self) -> dict[str, int]:
        """Harm judge name -> how many test cases it could not decide (``harmful`` None, e.g. an LLM judge's
        unreadable answer); they count as not harmful in the ASR, so a large count makes it a lower bound."""
        return {
            judge: sum(v["harmful"] is None for o in self.outcomes for v in o.verdicts[judge])
            for judge, about in self.judges.items()
            if about["measures"] == "harm"
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "judges": self.judges,
            "attacks": self.attacks,
            "rates": self.rates(),
            "undecided": self.undecided(),
            "test_cases": len([case for o in self.outcomes for case in o.cases]),
            "behaviours": len({o.behaviour.id for o in self.outcomes}),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


def _summarised(value: Any) -> Any:
    """``value`` with every array of more than `LONGEST_REPORTED` numbers replaced by a note of its size."""
    if isinstance(value, dict):
        return {key: _summarised(item) for key, item in value.items()}
    if isinstance(value, list):
        count = _numbers(value)
        if count is not None and count > LONGEST_REPORTED:
            return f"{count} numbers, in the case file"
        return [_summarised(item) for item in value]
    return value


def _numbers(value: Any) -> int | None:
    """How many numbers a (nested) list of numbers holds; None when it holds anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return None
    if not isinstance(value, list):
        return 1
    total = 0
    for item in value:
        count = _numbers(item)
        if count is None:
            return None
        total += count
    return total


def run_campaign(
    model: Model,
    attacks: Mapping[str, Attack],
    behaviours: Sequence[Behaviour],
    *,
    out: str | Path,
    judges: Sequence[str] = ("substring",),
    intervention: Interventions = None,
    seed: int = 0,
    max_new_tokens: int = 64,
    dtype: str = "auto",
    batch_size: int = 16,
    harmless_kl_prompts: int = 16,
    progress: bool = True,
) -> Campaign:
    """Attack every behaviour with every attack, generate greedy completions of the test cases under
    ``intervention`` and judge them, and measure the harmless KL of model edits on the first
    ``harmless_kl_prompts`` harmless test prompts; finished pairs already in ``out`` with the same key are
    reused."""
    if not attacks:
        raise SettingError("A campaign needs at least one attack.")
    if not behaviours:
        raise SettingError("A campaign needs at least one behaviour.")
    for attack in attacks.values():  # an attack that cannot run here fails now, not after the others ran
        check_attack(attack, model)
    kl_prompts = harmless_prompts(harmless_kl_prompts)
    judge_objects = {name: JUDGES.get(name)() for name in judges}
    about = {name: describe_judge(name, judge) for name, judge in judge_objects.items()}
    precision = resolve(dtype, model.device).dtype
    common = {
        "model": weights_fingerprint(model.hf_model),
        "chat": model.chat_format,
        "intervention": fingerprint(intervention),
        "saved_directions": fingerprint(model.directions),
        "dtype": precision,
    }
    generation = {"max_new_tokens": max_new_tokens, "dtype": precision}
    shared = _Job(
        model,
        intervention,
        dtype,
        batch_size,
        max_new_tokens,
        kl_prompts,
        Path(out) / "harmless_kl",
        {"model": common["model"], "chat": common["chat"], "prompts": kl_prompts},
    )
    outcomes = []
    for name, attack in attacks.items():
        pairs = [
            _pair(shared, common, generation, name, attack, behaviour, seed, Path(out)) for behaviour in behaviours
        ]
        for pair in tqdm(pairs, desc=f"attack {name}", disable=not progress):
            _attack(pair)
        _complete([pair for pair in pairs if not _completed(pair)], progress)
        outcomes += [_judged(pair, judge_objects) for pair in pairs]
    described = {
        name: {
            "settings": attack.settings(),
            "caveat": attack.caveat,
            "intervention": intervention_kind(attack),
            "variant": getattr(attack, "variant", None),
            "harmless_kl_prompts": harmless_kl_prompts,
        }
        for name, attack in attacks.items()
    }
    return Campaign(outcomes, about, described)


def describe_judge(name: str, judge: Judge) -> dict[str, Any]:
    """What a judge measures and its agreement with human labels on held-out labelled rows (measured once,
    cached); where the labels cannot be fetched, the agreement is None and ``unmeasured`` says why."""
    try:
        return {"measures": measures_of(judge), "agreement": judge_agreement(name).to_dict()}
    except FetchError as error:
        return {"measures": measures_of(judge), "agreement": None, "unmeasured": str(error)}


def behaviour_seed(seed: int, attack: str, behaviour: Behaviour) -> int:
    """The seed an attack gets for one behaviour: independent of the order and of other behaviours."""
    digest = hashlib.sha256(f"{seed}:{attack}:{behaviour.id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class _Job:
    """What every (attack, behaviour) pair of a campaign shares: the model and how it is run."""

    model: Model
    intervention: Interventions
    dtype: str
    batch_size: int
    max_new_tokens: int
    kl_prompts: list[str]
    """The harmless prompts a model edit's KL is measured on."""
    kl_cache: Path
    """Where each edit's harmless KL is kept (``OUT/harmless_kl``)."""
    kl_key: dict[str, Any]
    """What every harmless KL depends on besides the edit: the weights, the chat format and the prompts."""


@dataclass
class _Pair:
    """One (attack, behaviour) of a campaign: what decides its results and its cache file's contents."""

    name: str
    attack: Attack
    behaviour: Behaviour
    seed: int
    """The attack's seed for this behaviour (`behaviour_seed`)."""
    job: _Job
    """The campaign's job, its intervention reseeded for this behaviour."""
    path: Path
    keys: dict[str, str]
    """The cache keys of its test cases and of their completions."""
    saved: dict[str, Any]
    """The cache file's contents, filled level by level."""


def _pair(
    shared: _Job,
    common: dict[str, Any],
    generation: dict[str, Any],
    name: str,
    attack: Attack,
    behaviour: Behaviour,
    seed: int,
    out: Path,
) -> _Pair:
    seeded = behaviour_seed(seed, name, behaviour)
    payload = {**common, "attack": name, "settings": attack.settings(), "seed": seed}
    cases = _key({**payload, "behaviour": [behaviour.text, behaviour.target]})
    keys = {"cases": cases, "completions": _key({"cases": cases, **generation})}
    # a behaviour's random ablations must not depend on which behaviours ran before it
    job = replace(shared, intervention=reseeded(shared.intervention, seeded))
    path = out / "cases" / name / f"{behaviour.id}.json"
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        saved = {}  # a damaged cache file (edited by hand) is recomputed
    return _Pair(name, attack, behaviour, seeded, job, path, keys, saved if isinstance(saved, dict) else {})


def _attack(pair: _Pair) -> None:
    """The pair's test cases, made by the attack unless cached under the same key."""
    if pair.saved.get("key") == pair.keys["cases"]:
        return
    started = time.perf_counter()
    cases = pair.attack.run(pair.job.model, pair.behaviour, intervention=pair.job.intervention, seed=pair.seed)
    if not cases:
        raise SettingError(f"The attack {pair.name!r} made no test case for behaviour {pair.behaviour.id}.")
    pair.saved = {
        "key": pair.keys["cases"],
        "cases": [case.to_dict() for case in cases],
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write(pair.path, pair.saved)


def _completed(pair: _Pair) -> bool:
    completions = pair.saved.get("completions")
    return isinstance(completions, dict) and completions.get("key") == pair.keys["completions"]


def _complete(pairs: Sequence[_Pair], progress: bool) -> None:
    """Greedy completions of the pairs' test cases, batched across behaviours: the cases answered under the
    same interventions (the campaign's, reseeded per behaviour, and the attack's own model edit, if any)
    share a generation. A prefilled reply is continued and kept."""
    if not pairs:
        return
    cases = [[TestCase.from_dict(case) for case in pair.saved["cases"]] for pair in pairs]
    groups: dict[str, list[tuple[int, int]]] = {}
    edits: dict[str, list[Any]] = {}
    for i, pair in enumerate(pairs):
        for j, case in enumerate(cases[i]):
            added = generation_intervention(pair.attack, pair.job.model, case)
            # seeded afresh: the attack's own forward passes (skipped when its cases are cached) must not
            # change the random ablations the completions are generated under
            edit = [*_as_list(reseeded(pair.job.intervention, pair.seed)), *_as_list(added)]
            key = fingerprint(edit)
            groups.setdefault(key, []).append((i, j))
            edits[key] = edit
    texts = [[""] * len(own) for own in cases]
    job = pairs[0].job
    with autocast(job.model, job.dtype):
        for key, members in tqdm(groups.items(), desc=f"answer {pairs[0].name}", disable=not progress, leave=False):
            rendered = [job.model.format([cases[i][j].prompt])[0] + cases[i][j].prefill for i, j in members]
            replies = generate(
                job.model,
                rendered,
                max_new_tokens=job.max_new_tokens,
                intervention=edits[key] or None,
                batch_size=job.batch_size,
                rendered=True,
            )
            for (i, j), reply in zip(members, replies):
                texts[i][j] = cases[i][j].prefill + reply
    for pair, replies in zip(pairs, texts):
        pair.saved["completions"] = {"key": pair.keys["completions"], "texts": replies}
        pair.saved["verdicts"] = {}
        _write(pair.path, pair.saved)


def _judged(pair: _Pair, judges: Mapping[str, Judge]) -> Outcome:
    """The pair's outcome, judged by every judge whose cached verdicts are missing or stale."""
    saved, behaviour = pair.saved, pair.behaviour
    cases = [TestCase.from_dict(case) for case in saved["cases"]]
    completions = saved["completions"]["texts"]
    # the judges read the model's own words: an attacker's prefill is not part of what the model wrote
    replies = [completion.removeprefix(case.prefill) for case, completion in zip(cases, completions)]
    verdicts = saved.setdefault("verdicts", {})
    stale = {n: j for n, j in judges.items() if verdicts.get(n, {}).get("judge") != judge_identity(n, j)}
    for judge_name, judge in stale.items():
        verdicts[judge_name] = {
            "judge": judge_identity(judge_name, judge),
            "verdicts": [
                {"refused": v.refused, "harmful": getattr(v, "harmful", None), "reason": v.reason}
                for v in judge.judge([behaviour.text] * len(cases), replies)
            ],
        }
    if stale:
        _write(pair.path, saved)
    judged = {judge_name: verdicts[judge_name]["verdicts"] for judge_name in judges}
    kl = _harmless_kl(pair.job, pair.attack, cases)
    return Outcome(pair.name, behaviour, cases, completions, judged, saved["seconds"], kl)


def _harmless_kl(job: _Job, attack: Attack, cases: Sequence[TestCase]) -> list[float | None]:
    """Each case's harmless KL: of the campaign's intervention and the attack's model edit together, its
    generators seeded alike for every behaviour (the same edit costs the same), cached per distinct edit."""
    if intervention_kind(attack) != MODEL_EDIT:
        return [None] * len(cases)
    costs: list[float | None] = []
    for case in cases:
        edit = reseeded([*_as_list(job.intervention), *_as_list(generation_intervention(attack, job.model, case))], 0)
        path = job.kl_cache / f"{_key({**job.kl_key, 'edit': fingerprint(edit)})}.json"
        costs.append(harmless_kl(job.model, edit, job.kl_prompts, path))
    return costs


def _as_list(intervention: Interventions) -> list[Any]:
    if intervention is None:
        return []
    return list(intervention) if isinstance(intervention, (list, tuple)) else [intervention]


def judge_identity(name: str, judge: Judge) -> str:
    """What a cached verdict was judged by: the registered name, `judge_key` (class, version, settings) and
    what it read (``reply``: the completion without an attacker's prefill; verdicts cached before that read
    the prefill too, and are judged again)."""
    return f"{name}:{judge_key(judge)}:reply"


def _write(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode("utf-8"))


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def fingerprint(value: Any) -> str:
    """A stable identity of an intervention (or any nesting of them): class names, tensors' bytes and
    generators' states, so a campaign under another intervention never reuses cached results."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()[:24]


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, torch.Generator):
        digest.update(value.get_state().numpy().tobytes())
    elif isinstance(value, Direction):
        digest.update(f"Direction({value.layer},{value.position})".encode())
        _feed(digest, value.vector)
    elif is_dataclass(value) and not isinstance(value, type):
        digest.update(type(value).__qualname__.encode())
        for f in fields(value):
            _feed(digest, getattr(value, f.name))
    elif isinstance(value, (list, tuple)) or (
        hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes, dict))
    ):
        digest.update(f"[{len(value)}]".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())
