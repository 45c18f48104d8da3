"""`ReferenceLogits`: the reference's reply logits kept per example equal a fresh forward pass, in any batch, and
outlive a job for the same reference only."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from mechrefusal.core import memory
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import resolve
from mechrefusal.measure.losses import reply_kl, reply_targets
from mechrefusal.models import Model
from mechrefusal.models.export import hf_state_dict
from mechrefusal.train import reference
from mechrefusal.train.loop import _replies
from mechrefusal.train.reference import ReferenceLogits
from mechrefusal.train.targets import Example, training_data


@pytest.fixture(scope="module")
def harmless(toy) -> list[Example]:
    found = training_data(toy, "train", limit=12, max_new_tokens=6, dtype="float32", progress=False)
    examples = found.harmless[:6]
    assert len({len(toy.tokenize_replies([e.instruction], [e.reply]).input_ids[0]) for e in examples}) > 1
    return examples


@pytest.fixture
def forward_rows(toy, monkeypatch) -> list[int]:
    """The rows of every reference forward pass."""
    rows: list[int] = []
    plain = toy.reply_logits

    def counted(batch, forward=None):
        rows.append(batch.input_ids.shape[0])
        return plain(batch, forward)

    monkeypatch.setattr(toy, "reply_logits", counted)
    return rows


def fresh(toy, examples: list[Example]) -> tuple[torch.Tensor, object]:
    batch = _replies(toy, examples)
    with torch.no_grad():
        return toy.reply_logits(batch), batch


@pytest.mark.parametrize("budget", [None, 0])
def test_kept_logits_equal_a_fresh_forward_in_another_batch(toy, harmless, forward_rows, budget):
    kept = ReferenceLogits(toy, budget_bytes=budget)
    first = [harmless[i] for i in (0, 1, 2, 3)]
    again = [harmless[i] for i in (3, 5, 0, 4, 1)]  # other rows, other padding, two examples new
    for examples in (first, again):
        want, batch = fresh(toy, examples)
        got = kept(examples, batch, "float32")
        _, predicted = reply_targets(batch)
        assert got.shape == want.shape
        torch.testing.assert_close(got[predicted], want[predicted], rtol=1e-5, atol=1e-5)
        assert not got[~predicted].any()  # positions no loss reads
        torch.testing.assert_close(reply_kl(want, got, batch), torch.zeros(len(examples)), rtol=0, atol=1e-6)
    assert forward_rows[0::2] == [4, 5]  # the fresh passes of the check
    assert forward_rows[1::2] == ([4, 2] if budget is None else [4, 5])  # kept: only the two new examples run


def test_the_budget_bounds_what_is_kept(toy, harmless):
    alone = ReferenceLogits(toy)
    alone(harmless[:1], _replies(toy, harmless[:1]), "float32")
    replies = reply_targets(_replies(toy, harmless[:1]))[1].sum().item()
    assert alone.kept_bytes == replies * toy.bridge.cfg.d_vocab * 4  # float32 logits of its reply positions
    small = ReferenceLogits(toy, budget_bytes=alone.kept_bytes)
    small(harmless[:4], _replies(toy, harmless[:4]), "float32")
    assert small.kept_bytes == alone.kept_bytes
    assert repr(small) == f"ReferenceLogits(examples=1, kept_bytes={alone.kept_bytes}, budget={alone.kept_bytes})"


@pytest.fixture
def empty_process(monkeypatch) -> None:
    """No logits kept by earlier tests' jobs."""
    monkeypatch.setattr(reference, "_in_process", None)


def test_kept_for_the_process_serves_a_later_job(toy, harmless, forward_rows, empty_process):
    batch = _replies(toy, harmless[:3])
    first = ReferenceLogits.for_process(toy)(harmless[:3], batch, "float32")
    later = ReferenceLogits.for_process(toy)  # a later job, as the pipeline's fail-closed stage after round 0
    assert torch.equal(later(harmless[:3], batch, "float32"), first)
    assert forward_rows == [3]  # only the first job ran the reference
    with warnings.catch_warnings():  # bf16 is slow on some CPUs, and says so
        warnings.simplefilter("ignore")
        later(harmless[:3], batch, "bfloat16")  # another compute dtype is another key
    assert forward_rows == [3, 3]
    later(harmless[:3], batch, "auto")  # the dtype it resolves to is kept already: one key, no third pass
    assert forward_rows == [3, 3] and resolve("auto", toy.device).dtype in ("float32", "bfloat16")
    assert ReferenceLogits(toy).kept_bytes == 0  # a plain one keeps for its own job only
    ReferenceLogits.release_process()  # the pipeline after its last training stage
    assert ReferenceLogits.for_process(toy).kept_bytes == 0 and later.kept_bytes > 0  # a job's own stay its


def test_another_reference_drops_what_the_process_kept(toy, harmless, forward_rows, empty_process, monkeypatch):
    batch = _replies(toy, harmless[:2])
    ReferenceLogits.for_process(toy)(harmless[:2], batch, "float32")
    monkeypatch.setattr(reference, "_owner", lambda model: "other weights")
    other = ReferenceLogits.for_process(toy)
    assert other.kept_bytes == 0
    other(harmless[:2], batch, "float32")
    assert forward_rows == [2, 2]


def test_the_owner_follows_weights_and_chat_format(toy, monkeypatch):
    before = reference._owner(toy)
    weight = hf_state_dict(toy)["model.embed_tokens.weight"]
    kept = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] = kept + 1.0
    try:
        assert reference._owner(toy) != before
    finally:
        with torch.no_grad():
            weight[0, 0] = kept
    assert reference._owner(toy) == before
    with torch.no_grad():  # an entry past the few the digest samples one by one
        weight[-1, -1] += 1e-3
    try:
        assert reference._owner(toy) != before
    finally:
        with torch.no_grad():
            weight[-1, -1] -= 1e-3
    monkeypatch.setattr(type(toy), "chat_format", property(lambda self: "<|user|>{instruction}"))
    assert reference._owner(toy) != before


def test_a_reference_reading_other_tokens_or_prompts_is_refused(toy):
    kept = ReferenceLogits(toy, budget_bytes=0)
    kept.check(Model(toy.bridge, toy.tokenizer, spec="same"))  # the same tokens and chat prompts
    system = Model(toy.bridge, toy.tokenizer, spec="told to be brief", system="Be brief.")
    with pytest.raises(SettingError, match=r"'told to be brief' and its reference .* render chat prompts differently"):
        kept.check(system)
    tokenizer = copy.deepcopy(toy.tokenizer)
    tokenizer.add_tokens(["<not-in-the-reference>"])
    with pytest.raises(SettingError, match=r"The model 'grown' and the reference .* have different tokenizers"):
        kept.check(Model(toy.bridge, tokenizer, spec="grown"))


def test_the_budget_is_a_quarter_of_the_memory_the_container_allows(tmp_path, monkeypatch):
    unlimited, limited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited.write_text("max\n")
    limited.write_text(f"{2**30}\n")
    machine = memory.memory_limit_bytes(limits=())
    assert machine is not None and machine > 2**30
    assert memory.memory_limit_bytes(limits=(str(unlimited), str(tmp_path / "absent"))) == machine
    assert memory.memory_limit_bytes(limits=(str(unlimited), str(limited))) == 2**30
    monkeypatch.setattr(reference, "memory_limit_bytes", lambda: 2**30)
    assert reference.default_budget_bytes() == 2**28
    monkeypatch.setattr(reference, "memory_limit_bytes", lambda: None)
    assert reference.default_budget_bytes() == 0
