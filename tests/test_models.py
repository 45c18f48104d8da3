"""Model loading, chat formatting and left-padded batching on a tiny random model."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import ModelLoadError
from mechrefusal.core.sequences import common_prefix_length
from mechrefusal.models.chat import TEMPLATE_DATE, ChatFormat
from tests.parity import assert_batch_parity

PROMPTS = ["Hi", "Write a short poem about the sea and the wind at night", "What is 2 + 2?"]


def test_tiny_model_shape(tiny_model):
    assert tiny_model.n_layers == 2
    assert tiny_model.d_model == 64
    assert tiny_model.dtype == torch.float32


def test_post_instruction_tokens_come_from_the_template(tiny_model):
    tokens = tiny_model.tokenizer.convert_ids_to_tokens(list(tiny_model.chat.post_instruction_ids))
    text = tiny_model.tokenizer.convert_tokens_to_string(tokens)
    assert text == "<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_model.post_instruction_positions == list(range(-len(tokens), 0))


def test_prompts_end_with_the_post_instruction_tokens(tiny_model):
    batch = tiny_model.tokenize(PROMPTS)
    suffix = torch.tensor(tiny_model.chat.post_instruction_ids)
    assert torch.equal(batch.input_ids[:, -len(suffix) :], suffix.expand(len(PROMPTS), -1))


def test_batches_are_left_padded(tiny_model):
    batch = tiny_model.tokenize(PROMPTS)
    lengths = batch.attention_mask.sum(dim=1)
    assert lengths.min() < lengths.max()
    assert torch.all(batch.attention_mask[:, -1] == 1)
    for row, length in zip(batch.attention_mask, lengths):
        assert row[: len(row) - length].sum() == 0


def test_padded_batch_equals_single_prompts(tiny_on_device):
    assert_batch_parity(tiny_on_device, PROMPTS)


def test_batches_cover_every_instruction_once(tiny_model):
    instructions = [f"question number {i} " + "x" * (i % 5) for i in range(11)]
    seen = [i for indices, _ in tiny_model.batches(instructions, batch_size=4) for i in indices]
    assert sorted(seen) == list(range(11))


def test_long_batches_are_split_to_the_token_budget(tiny_model, monkeypatch):
    instructions = [f"item {i} " + "word " * (3 * i) for i in range(9)]
    whole = list(tiny_model.batches(instructions, batch_size=16))
    monkeypatch.setattr("mechrefusal.models.model.MAX_BATCH_TOKENS", 64)
    split = list(tiny_model.batches(instructions, batch_size=16))
    assert len(whole) == 1 and len(split) > 2
    assert sorted(i for indices, _ in split for i in indices) == list(range(9))
    for indices, batch in split:
        rows, width = batch.input_ids.shape
        assert rows == len(indices) and (rows == 1 or rows * width <= 64)
        for row, i in zip(batch.input_ids, indices):  # each row is its own prompt, left-padded
            alone = tiny_model.tokenize([instructions[i]]).input_ids[0]
            assert torch.equal(row[width - len(alone) :], alone)


def test_tokenize_rejects_a_bare_string(tiny_model):
    with pytest.raises(ValueError, match="list of instructions"):
        tiny_model.tokenize("Hi")


def test_system_message_is_rendered(tiny_model):
    chat = ChatFormat(tiny_model.tokenizer, system="Be brief.")
    assert chat.prompt("Hi").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert chat.post_instruction_ids == tiny_model.chat.post_instruction_ids


def test_tokenizer_without_chat_template_is_a_clear_error(tiny_model):
    tokenizer = type(tiny_model.tokenizer).from_pretrained(tiny_model.tokenizer.name_or_path)
    tokenizer.chat_template = None
    with pytest.raises(ModelLoadError, match="has no chat template"):
        ChatFormat(tokenizer)


DATED = (
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "Today Date: {{ date_string }}\n{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


def _with_template(tiny_model, template):
    tokenizer = type(tiny_model.tokenizer).from_pretrained(tiny_model.tokenizer.name_or_path)
    tokenizer.chat_template = template
    return tokenizer


def test_a_template_that_dates_its_prompts_gets_a_fixed_date(tiny_model):
    chat = ChatFormat(_with_template(tiny_model, DATED))
    assert chat.prompt("Hi").startswith(f"Today Date: {TEMPLATE_DATE}\n<|im_start|>user\nHi")
    assert chat.render([{"role": "user", "content": "Hi"}]) == chat.prompt("Hi")


def test_a_template_that_reads_the_clock_itself_is_warned_of(tiny_model):
    clock = DATED.replace("{{ date_string }}", "{{ strftime_now('%Y-%m-%d') }}").replace("date_string", "day")
    with pytest.warns(UserWarning, match="writes today's date into every prompt"):
        ChatFormat(_with_template(tiny_model, clock))


def test_load_from_a_local_directory(tiny_model):
    again = mechrefusal.load(tiny_model.spec, device="cpu")
    batch = tiny_model.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(again.logits(batch), tiny_model.logits(batch))


@pytest.mark.parametrize("device_map", [{"": "cpu"}, "per-layer"])
def test_a_device_map_loads_a_model_whose_hooks_and_ablations_still_work(tiny_model, device_map):
    """On CPU only a trivial map can be tried (whole model, or every module and layer named, on cpu), and
    transformers then places the model without accelerate's dispatch: the split across GPUs is untested."""
    from mechrefusal import Ablate, Direction

    if device_map == "per-layer":
        device_map = {
            "model.embed_tokens": "cpu",
            "model.norm": "cpu",
            "model.rotary_emb": "cpu",
            "lm_head": "cpu",
            **{f"model.layers.{i}": "cpu" for i in range(tiny_model.n_layers)},
        }
    mapped = mechrefusal.load(tiny_model.spec, device_map=device_map)
    assert mapped.device == torch.device("cpu")
    batch = tiny_model.tokenize(["Hi there", "Write a poem about rain"])
    ablate = Ablate(Direction(torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "t"))
    with torch.no_grad():
        torch.testing.assert_close(mapped.logits(batch), tiny_model.logits(batch))
        with mapped.intervene(ablate), tiny_model.intervene(ablate):
            ablated = mapped.logits(batch)
            torch.testing.assert_close(ablated, tiny_model.logits(batch))
        assert (ablated - tiny_model.logits(batch)).abs().max() > 1e-4  # the ablation did act


def test_reply_logits_are_the_full_logits_where_replies_are_predicted(tiny_model):
    batch = tiny_model.tokenize_replies(["Hi", "Write a short poem about the sea"], ["Hello there, friend.", "No."])
    window = batch.predictions
    first_reply = [int(row.nonzero()[0]) for row in batch.reply_mask]
    last_reply = [int(row.nonzero()[-1]) for row in batch.reply_mask]
    assert (window.start, window.stop) == (min(first_reply) - 1, max(last_reply))
    with torch.no_grad():
        torch.testing.assert_close(tiny_model.reply_logits(batch), tiny_model.logits(batch)[:, window])


def test_common_prefix_length_counts_the_leading_tokens_all_sequences_share():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2], [1, 2, 9]]) == 2  # one is the other's start
    assert common_prefix_length([[7, 1], [1, 7]]) == 0 and common_prefix_length([[3, 4]]) == 2
    assert common_prefix_length([]) == 0
