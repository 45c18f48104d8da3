"""Recovery examples (deep safety alignment against prefilling): untrained prefills in reply batches, the
compliant openings kept with the training targets, the draws, a round that uses them and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from mechrefusal.core.errors import SettingError
from mechrefusal.measure.judges import JUDGES
from mechrefusal.train import TrainSettings, run
from mechrefusal.train import job as train_job
from mechrefusal.train.recovery import recovery
from mechrefusal.train.settings import AFTER_ROUND_ZERO, LatentTrainingSettings
from mechrefusal.train.targets import Example, TrainingData, training_data
from tests.test_train import toy_settings

REFUSAL = "I can't help with that."


def test_a_prefill_is_context_before_the_reply_and_not_part_of_it(tiny_model):
    prompt, prefill = "Write a poem", "Sure, here is"
    batch = tiny_model.tokenize_replies([prompt, prompt], [REFUSAL, REFUSAL], prefills=[prefill, ""])
    encode = lambda text: tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rendered = tiny_model.chat.encode(tiny_model.format([prompt])[0])
    reply = encode(REFUSAL) + [tiny_model.tokenizer.eos_token_id]
    with_prefill = rendered + encode(prefill) + reply
    assert batch.input_ids[0, : len(with_prefill)].tolist() == with_prefill
    assert batch.reply_mask[0].nonzero().flatten().tolist() == list(
        range(len(with_prefill) - len(reply), len(with_prefill))
    )
    assert batch.reply_mask[0].sum() == batch.reply_mask[1].sum() == len(reply)
    with pytest.raises(SettingError, match="one prefill"):
        tiny_model.tokenize_replies([prompt], [REFUSAL], prefills=[])


def test_training_data_keeps_the_replies_the_judge_does_not_call_refusals(tiny_model, empty_home):
    found = training_data(tiny_model, "train", limit=8, max_new_tokens=6, dtype="float32", progress=False)
    [cached] = (empty_home / "targets").glob("*.json")
    stored = json.loads(cached.read_text())
    examples = [e for key in ("harmful", "harmless", "compliant") for e in stored[key]]
    assert {tuple(sorted(e)) for e in examples} == {("instruction", "reply")}  # older code reads it too
    assert found.compliant and {e.instruction for e in found.compliant} <= {e.instruction for e in found.harmful}
    verdicts = JUDGES.get("substring")().judge(
        [e.instruction for e in found.compliant], [e.reply for e in found.compliant]
    )
    assert not any(v.refused for v in verdicts) and all(e.reply.strip() for e in found.compliant)
    again = training_data(tiny_model, "train", limit=8, max_new_tokens=6, dtype="float32", progress=False)
    assert again.compliant == found.compliant  # from the cache


def test_every_compliant_answers_every_harmful_prompt_of_a_model_that_does_not_refuse(
    tiny_model, empty_home, monkeypatch
):
    from mechrefusal.train import targets as targets_module

    monkeypatch.setattr(targets_module, "GENERATION_BATCH_SIZE", 4)
    generated: list[int] = []
    real = targets_module.generate
    monkeypatch.setattr(targets_module, "generate", lambda m, p, **k: generated.append(len(p)) or real(m, p, **k))
    options = dict(limit=20, max_new_tokens=3, dtype="float32", progress=False)
    stopped = training_data(tiny_model, "train", **options)
    assert generated == [20, 4, 4, 4]  # harmless, then harmful until the model is clearly not a refuser
    generated.clear()
    every = training_data(tiny_model, "train", every_compliant=True, **options)
    assert generated == [20, 4, 4, 4, 4, 4]  # cached apart: the stopped targets are not reused
    assert not every.own_refusals and every.harmful == stopped.harmful and every.harmless == stopped.harmless
    answered = [e.instruction for e in every.compliant]
    assert answered[: len(stopped.compliant)] == [e.instruction for e in stopped.compliant]
    assert len(answered) > len(stopped.compliant) and set(answered) <= {e.instruction for e in every.harmful}


def test_recovery_opens_answered_prompts_with_their_answer_and_leaves_the_rest(tiny_model):
    answered = Example("How do I pick a lock?", "Step one: insert the tension wrench and turn it gently.")
    plain = [Example("How do I pick a lock?", REFUSAL), Example("Unanswered prompt", REFUSAL)]
    tokens = tiny_model.tokenizer(answered.reply, add_special_tokens=False)["input_ids"]

    def turn(share: float, seed: int = 0) -> list[Example]:
        return recovery(tiny_model, [answered], share, 4, torch.Generator().manual_seed(seed))(plain * 20)

    turned = turn(1.0)
    assert all(e == plain[1] for e in turned[1::2])  # no answer to open with: unchanged
    openings = {e.prefill for e in turned[::2]}
    assert openings <= {tiny_model.tokenizer.decode(tokens[:k]) for k in range(1, 5)} and len(openings) > 1
    assert all(e.reply == " " + REFUSAL and e.instruction == plain[0].instruction for e in turned[::2])
    assert turn(0.0) == plain * 20
    halves = sum(bool(e.prefill) for e in turn(0.5)[::2])
    assert 3 <= halves <= 17 and turn(0.5) == turn(0.5)  # about half, and the same draws from the same seed
    with pytest.raises(SettingError, match="refused every harmful training prompt"):
        recovery(tiny_model, [], 0.5, 4, torch.Generator())


def test_a_round_trains_recovery_examples_and_round_zero_stays_shareable(toy_dir, tmp_path, monkeypatch):
    original = train_job.training_data
    seen, asked = [], []

    def with_openings(model, split, **kwargs) -> TrainingData:
        asked.append((split, kwargs.get("every_compliant", False)))
        found = original(model, split, **kwargs)
        compliant = [Example(e.instruction, "Sure, here is a plan with three steps.") for e in found.harmful]
        return TrainingData(found.harmful, found.harmless, found.own_refusals, compliant)

    def recording(*args, **kwargs):
        seen.append(kwargs["recovery"])
        return train_round(*args, **kwargs)

    train_round = train_job.train_round
    monkeypatch.setattr(train_job, "training_data", with_openings)
    monkeypatch.setattr(train_job, "train_round", recording)
    settings = toy_settings(toy_dir, tmp_path / "run", finder="dim", steps=2, recovery_share=1.0, recovery_tokens=3)
    written = run(settings, progress=False)
    assert [path.name for path in written] == ["round-0", "round-1"]
    assert seen[0] is None and seen[1] is not None and seen[1].share == 1.0  # round 0 as published
    assert asked == [("train", True), ("val", False)]  # every harmful train prompt answered, for its opening
    assert json.loads((written[1] / "mechrefusal.json").read_text())["settings"]["recovery_share"] == 1.0
    assert {"recovery_share", "recovery_tokens"} <= set(AFTER_ROUND_ZERO)


def test_bad_recovery_settings_are_one_sentence():
    with pytest.raises(SettingError, match=r"recovery_share must lie in \[0, 1\]"):
        TrainSettings(recovery_share=1.5)
    with pytest.raises(SettingError, match="recovery_tokens be 1 or more"):
        TrainSettings(recovery_tokens=0)
    with pytest.raises(SettingError, match="^Latent adversarial training with the compliance objective does not take"):
        TrainSettings(recovery_share=0.5, latent=LatentTrainingSettings(epsilon=0.1))
    TrainSettings(recovery_share=0.5, latent=LatentTrainingSettings(epsilon=0.1, objective="refusal"))  # fine
