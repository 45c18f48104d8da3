"""Utility on the toy model, offline: the harness adapter's log-likelihoods against the model's own logits,
known-answer accuracy on a local task, CE and KL against a reference, the whole measurement, bad input."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from lm_eval.api.instance import Instance

from mechrefusal import Ablate, Direction, data, generate
from mechrefusal.core.errors import SettingError
from mechrefusal.measure.evaluation import judged_completions
from mechrefusal.measure.judges import PrefixJudge
from mechrefusal.measure.overrefusal import compliance
from mechrefusal.measure.utility import (
    LOCAL_TASKS,
    ModelLM,
    answer_divergence,
    measure_utility,
    reference_answers,
    task_scores,
)
from mechrefusal.models import Batch
from mechrefusal.models.chat import ChatFormat

# Each item: a one-word choice and a long one. An untrained language model gives a 30-token continuation far
# less likelihood than a one-token one, so the short choice wins each time: gold short twice, long once.
LONG = " purple elephants " * 15
ITEMS = [
    {"question": "Is water wet?", "choices": ["Yes", LONG], "answer": 0},
    {"question": "Is fire hot?", "choices": ["Yes", LONG], "answer": 0},
    {"question": "Is ice cold?", "choices": ["Yes", LONG], "answer": 1},
]


@pytest.fixture
def three_item_task(tmp_path):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    config = tmp_path / "three.yaml"
    config.write_text(
        "task: three_items\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: items.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: 'Question: {{question}}\\nAnswer:'\n"
        "doc_to_target: answer\ndoc_to_choice: choices\nmetric_list:\n  - metric: acc\n"
    )
    return str(config)


@pytest.fixture
def ablation(toy):
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(3))
    return Ablate(Direction(vector, 1, -1, "random"))


def requests(*pairs: tuple[str, str]) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def expected_loglikelihood(model, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log-softmax of `Model.logits` at the continuation's positions, one unpadded row."""
    context_ids = model.tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = model.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    row = torch.tensor([ids])
    logprobs = model.logits(Batch(row, torch.ones_like(row))).float().log_softmax(dim=-1)[0]
    positions = range(len(context_ids), len(ids))
    total = sum(float(logprobs[p - 1, ids[p]]) for p in positions)
    return total, all(int(logprobs[p - 1].argmax()) == ids[p] for p in positions)


PAIRS = [("Question: Is water wet?\nAnswer:", " Yes"), ("The capital of France is", " Paris, a city"), ("Hi", "!")]


def test_loglikelihood_is_the_sum_of_the_models_log_softmax(toy, ablation):
    plain = ModelLM(toy, batch_size=2, dtype="float32").loglikelihood(requests(*PAIRS))
    ablated = ModelLM(toy, ablation, batch_size=3, dtype="float32").loglikelihood(requests(*PAIRS))
    with torch.no_grad():
        expected = [expected_loglikelihood(toy, *pair) for pair in PAIRS]
        with toy.intervene(ablation):
            expected_ablated = [expected_loglikelihood(toy, *pair) for pair in PAIRS]
    for got, want in zip(plain + ablated, expected + expected_ablated):
        assert got[0] == pytest.approx(want[0], abs=1e-4) and got[1] == want[1]
    assert all(abs(a[0] - p[0]) > 1e-4 for a, p in zip(ablated, plain))  # the hooks ran


def test_trailing_context_spaces_move_to_the_continuation(toy):
    lm = ModelLM(toy, dtype="float32")
    assert lm.loglikelihood(requests(("Answer: ", "Yes"))) == lm.loglikelihood(requests(("Answer:", " Yes")))


def test_known_answer_accuracy_on_a_local_task_plain_and_ablated(toy, ablation, three_item_task):
    for intervention in (None, ablation):
        scores, skipped = task_scores(ModelLM(toy, intervention, dtype="float32"), [three_item_task])
        assert skipped == {}
        assert scores["three_items"].accuracy == pytest.approx(2 / 3) and scores["three_items"].n == 3


def test_bundled_local_tasks_have_forty_items_and_valid_answers():
    for task in LOCAL_TASKS:
        path = data.__file__.replace("__init__.py", f"bundled/utility/{task.removeprefix('local_')}.jsonl")
        items = [json.loads(line) for line in open(path)]
        assert len(items) == 40 and all(0 <= item["answer"] < len(item["choices"]) <= 4 for item in items)


def test_ce_and_kl_against_the_reference(toy, ablation, empty_home):
    prompts = data.load("harmless", "test")[:4]
    answers = reference_answers(toy, prompts, max_new_tokens=6, dtype="float32", progress=False)
    assert len(list((empty_home / "answers").glob("*.json"))) == 1
    assert reference_answers(toy, prompts, max_new_tokens=6, dtype="float32") == answers  # from the cache
    with pytest.MonkeyPatch.context() as system:  # a system message is another chat format: answered afresh
        system.setattr(toy, "chat", ChatFormat(toy.tokenizer, system="Answer in one word."))
        reference_answers(toy, prompts, max_new_tokens=6, dtype="float32")
    assert len(list((empty_home / "answers").glob("*.json"))) == 2
    same = answer_divergence(toy, toy, prompts, answers, dtype="float32")
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.cross_entropy == pytest.approx(same.reference_cross_entropy)
    assert same.answers == 4 and same.tokens > 4
    ablated = answer_divergence(toy, toy, prompts, answers, intervention=ablation, dtype="float32")
    assert ablated.kl > 1e-4 and ablated.cross_entropy != pytest.approx(ablated.reference_cross_entropy)
    assert ablated.reference_cross_entropy == pytest.approx(same.reference_cross_entropy)


def test_measure_utility_offline_end_to_end(toy, three_item_task, empty_home, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "no-datasets")  # nothing cached
    result = measure_utility(
        toy, toy, tasks=["rte", three_item_task], limit=3, max_new_tokens=4, dtype="float32", progress=False
    )
    assert result.skipped["rte"].startswith("task rte's data is not available offline (pass download=True")
    assert result.tasks["three_items"].accuracy == pytest.approx(2 / 3) and result.kl == pytest.approx(0, abs=1e-6)
    assert result.harmless_n == result.edgy_n == 3
    for prompts, rate in (
        (data.load("harmless", "test")[:3], result.harmless_compliance),
        (data.load("overrefusal", "test")[:3], result.edgy_compliance),
    ):
        replies = generate(toy, prompts, max_new_tokens=4)  # the toy says "I cannot help ..." or "Here is ..."
        assert rate == pytest.approx(sum(not reply.startswith("I cannot") for reply in replies) / 3)
    document = json.loads(json.dumps(result.to_dict()))
    assert set(document) >= {"tasks", "skipped", "cross_entropy", "kl", "harmless_compliance", "edgy_compliance"}
    assert document["tasks"]["three_items"]["n"] == 3 and document["intervention"] is None
    assert "\n" not in repr(result) and repr(result).startswith("Utility(three_items=0.667, skipped=1, ")


def test_an_empty_reply_is_neither_compliance_nor_a_refusal(tiny_model, monkeypatch):
    replies = ["", "I cannot help with that.", "Here is how to do it."]
    monkeypatch.setattr("mechrefusal.measure.evaluation.generate", lambda model, prompts, **kwargs: replies)
    prompts = data.load("harmless", "test")[:3]
    assert compliance(tiny_model, prompts, dtype="float32") == pytest.approx(1 / 3)  # before: 2/3
    judged = judged_completions(tiny_model, prompts, judge=PrefixJudge(), dtype="float32")
    assert judged.empty == 1 and judged.rate == pytest.approx(1 / 3) and "empty=1" in repr(judged)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(limit=0), "limit must be at least 1 (or None for everything), got 0."),
        (dict(tasks=["mmlu"]), "Unknown utility task 'mmlu'; choose among boolq, rte,"),
        (dict(tasks="local_science"), "tasks must be a non-empty list of task names"),
        (dict(tasks=[]), "tasks must be a non-empty list of task names"),
    ],
)
def test_bad_input_is_one_sentence(toy, settings, message):
    with pytest.raises(SettingError) as error:
        measure_utility(toy, toy, progress=False, **settings)
    assert str(error.value).startswith(message)


def test_unsupported_request_types_are_named(toy):
    lm = ModelLM(toy)
    with pytest.raises(SettingError, match=r"loglikelihood requests\) only; this task asks for generate_until"):
        lm.generate_until(requests(("Hi", "!")))
    with pytest.raises(SettingError, match="asks for loglikelihood_rolling"):
        lm.loglikelihood_rolling(requests(("Hi", "!")))


def test_the_local_tasks_digest_follows_their_files(tmp_path, monkeypatch):
    import shutil

    from mechrefusal.measure import utility

    shutil.copytree(utility.LOCAL_DIR, tmp_path / "utility")
    monkeypatch.setattr(utility, "LOCAL_DIR", tmp_path / "utility")
    before = utility.local_tasks_digest()
    questions = tmp_path / "utility" / "science.jsonl"
    questions.write_text(questions.read_text().replace('"answer": 0', '"answer": 1', 1))
    assert utility.local_tasks_digest() != before
