"""Ablation and addition hooks, their scoping, and weight orthogonalisation parity (tiny model)."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Add, Direction, DirectionSet
from mechrefusal.interventions import uniform
from mechrefusal.measure.generation import _full_attention, generate_ids, stop_ids
from mechrefusal.models.autocast import autocast

PROMPTS = ["Hi", "Write a short poem about the sea", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def directions(tiny_model) -> DirectionSet:
    torch.manual_seed(3)
    return DirectionSet([Direction(torch.randn(tiny_model.d_model), layer, -1, "random") for layer in (0, 1)])


def capture(model, name, body):
    seen = {}

    def hook(activation, hook):
        seen["value"] = activation.detach().clone()

    with model.bridge.hooks(fwd_hooks=[(name, hook)]):
        body()
    return seen["value"]


def test_ablation_removes_the_span_everywhere(tiny_model, directions):
    batch = tiny_model.tokenize(PROMPTS)
    q = directions.basis()
    with torch.no_grad(), tiny_model.intervene(Ablate(directions)):
        for name in ("blocks.1.hook_in", "blocks.0.attn.hook_out", "blocks.1.mlp.hook_out"):
            activation = capture(tiny_model, name, lambda: tiny_model.logits(batch))
            assert (activation @ q).abs().max() < 1e-5
    plain = capture(tiny_model, "blocks.1.hook_in", lambda: tiny_model.logits(batch))
    assert (plain @ q).abs().max() > 1e-2


def test_addition_shifts_only_its_layer_input(tiny_model, directions):
    batch = tiny_model.tokenize(PROMPTS)
    direction = directions[1]
    with torch.no_grad():
        before = capture(tiny_model, "blocks.1.hook_in", lambda: tiny_model.logits(batch))
        with tiny_model.intervene(Add(direction, coeff=2.0)):
            after = capture(tiny_model, "blocks.1.hook_in", lambda: tiny_model.logits(batch))
            layer0 = capture(tiny_model, "blocks.0.hook_in", lambda: tiny_model.logits(batch))
        plain0 = capture(tiny_model, "blocks.0.hook_in", lambda: tiny_model.logits(batch))
    torch.testing.assert_close(after - before, (2.0 * direction.vector).expand_as(after), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer0, plain0)


def test_hooks_are_removed_even_when_the_body_raises(tiny_model, directions):
    calls = []
    tiny_model.bridge.add_hook("blocks.0.hook_in", lambda activation, hook: calls.append(1))
    batch = tiny_model.tokenize(PROMPTS)
    try:
        with torch.no_grad():
            plain = tiny_model.logits(batch)
            with pytest.raises(RuntimeError, match="boom"):
                with tiny_model.intervene(Ablate(directions), Add(directions[0])):
                    raise RuntimeError("boom")
            after = tiny_model.logits(batch)
        torch.testing.assert_close(after, plain)
        assert len(calls) == 2  # the user's hook fired on both passes and is still there
    finally:
        tiny_model.bridge.reset_hooks(including_permanent=True)


def test_interventions_compose(tiny_model, directions):
    batch = tiny_model.tokenize(PROMPTS)
    with torch.no_grad():
        with tiny_model.intervene(Ablate(directions[0])), tiny_model.intervene(Add(directions[1])):
            nested = tiny_model.logits(batch)
        with tiny_model.intervene([Ablate(directions[0]), Add(directions[1])]):
            listed = tiny_model.logits(batch)
        with tiny_model.intervene(Ablate(directions[0]), Add(directions[1])):
            together = tiny_model.logits(batch)
    torch.testing.assert_close(nested, together)
    torch.testing.assert_close(listed, together)


def test_orthogonalized_weights_equal_hook_ablation(tiny_on_device, directions, tmp_path, device):
    model = tiny_on_device
    out = mechrefusal.interventions.orthogonalize(model, directions, tmp_path / "orth")
    edited = mechrefusal.load(out, device=device)
    assert len(DirectionSet.load(out / "directions.safetensors")) == 2
    batch = model.tokenize(PROMPTS)
    with torch.no_grad():
        with model.intervene(Ablate(directions)):
            hooked = model.logits(batch)
        torch.testing.assert_close(edited.logits(batch), hooked, atol=1e-4, rtol=0)
        assert (model.logits(batch) - hooked).abs().max() > 1e-2  # the ablation did something


def test_greedy_generation_under_ablation_equals_the_orthogonalized_model(tiny_model, directions, tmp_path):
    edited = mechrefusal.load(
        mechrefusal.interventions.orthogonalize(tiny_model, directions, tmp_path / "orth"), device="cpu"
    )
    hooked = generate_ids(tiny_model, PROMPTS, max_new_tokens=12, intervention=Ablate(directions))
    assert hooked == generate_ids(edited, PROMPTS, max_new_tokens=12)
    assert hooked != generate_ids(tiny_model, PROMPTS, max_new_tokens=12)
    assert all(len(reply) > 0 for reply in hooked)
    texts = mechrefusal.generate(tiny_model, PROMPTS, max_new_tokens=12, intervention=Ablate(directions))
    assert texts == [tiny_model.tokenizer.decode(reply, skip_special_tokens=True) for reply in hooked]


def test_batched_generation_equals_one_at_a_time(tiny_model):
    batched = mechrefusal.generate(tiny_model, PROMPTS, max_new_tokens=8, batch_size=3)
    single = [mechrefusal.generate(tiny_model, [prompt], max_new_tokens=8)[0] for prompt in PROMPTS]
    assert batched == single


def test_generation_prefills_the_prompts_shared_prefix_once(tiny_model, directions):
    """The chat template's common start runs once for the batch, then the rest of each prompt (the replies are
    those of one prompt at a time, above); under hooks from outside `generate`, which may act per row, whole
    prompts run, with the same replies."""
    width = tiny_model.tokenize(PROMPTS).input_ids.shape[1]
    shapes = []
    embedding = tiny_model.hf_model.get_input_embeddings()
    handle = embedding.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    try:
        shared = generate_ids(tiny_model, PROMPTS, max_new_tokens=3, intervention=Ablate(directions))
        first = shapes[:2]
        shapes.clear()
        with tiny_model.intervene(Add(directions[0], 0.0)):  # an outside hook (one that changes nothing)
            whole = generate_ids(tiny_model, PROMPTS, max_new_tokens=3, intervention=Ablate(directions))
        outside = shapes[0]
        shapes.clear()
        with autocast(tiny_model, "bfloat16"), autocast(tiny_model, "bfloat16"):  # its NaN guards are no outside hook
            generate_ids(tiny_model, PROMPTS, max_new_tokens=3, intervention=Ablate(directions))
            guarded = shapes[:2]
            shapes.clear()
            with tiny_model.intervene(Add(directions[0], 0.0)):
                generate_ids(tiny_model, PROMPTS, max_new_tokens=3)
    finally:
        handle.remove()
    prefix = first[0][1]
    assert first == [(1, prefix), (3, width - prefix)] and prefix > 0
    assert outside == (3, width) and shared == whole
    assert guarded == first and shapes[0] == (3, width)  # nested guards counted; an outside hook still seen


def test_only_uniform_interventions_and_full_attention_layers_share_a_prefix(tiny_model, directions, monkeypatch):
    class PerPosition(Ablate):  # a subclass may act differently per row or position
        pass

    assert uniform(None, Ablate(directions), [Add(directions[0], 1.0)]) and not uniform(PerPosition(directions))
    config = tiny_model.hf_model.config
    for key in ("layer_types", "sliding_window", "attention_chunk_size"):
        monkeypatch.setattr(config, key, None, raising=False)

    def full_attention(**settings) -> bool:
        with monkeypatch.context() as patch:
            for key, value in settings.items():
                patch.setattr(config, key, value)
            return _full_attention(tiny_model)

    assert full_attention() and full_attention(layer_types=["full_attention"] * 2)
    assert not full_attention(layer_types=["full_attention", "chunked_attention"])
    assert not full_attention(layer_types=["sliding_attention", "full_attention"])
    assert not full_attention(sliding_window=4) and not full_attention(attention_chunk_size=8)


def test_kv_cached_generation_equals_greedy_decoding_by_full_forwards(tiny_model, directions):
    """Guards the KV cache: transformers 5.24 renamed the cache output, and TransformerLens 4.3's bridge
    then silently decoded every step from the newest token alone."""
    eos = tiny_model.tokenizer.eos_token_id
    for intervention in (None, Ablate(directions)):
        ids = tiny_model.tokenize(PROMPTS[1:2]).input_ids
        with torch.no_grad(), tiny_model.intervene(intervention):
            for _ in range(10):
                next_id = tiny_model.bridge(ids)[0, -1].argmax().item()
                if next_id == eos:
                    break
                ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
        prompt_length = tiny_model.tokenize(PROMPTS[1:2]).input_ids.shape[1]
        expected = tiny_model.tokenizer.decode(ids[0, prompt_length:], skip_special_tokens=True)
        assert mechrefusal.generate(tiny_model, PROMPTS[1:2], max_new_tokens=10, intervention=intervention) == [
            expected
        ]


def test_greedy_generation_ignores_the_models_own_decoding_defaults(tiny_model, monkeypatch):
    plain = mechrefusal.generate(tiny_model, PROMPTS, max_new_tokens=10)
    monkeypatch.setattr(tiny_model.hf_model.generation_config, "repetition_penalty", 5.0)
    monkeypatch.setattr(tiny_model.hf_model.generation_config, "no_repeat_ngram_size", 1)
    assert mechrefusal.generate(tiny_model, PROMPTS, max_new_tokens=10) == plain


def test_a_reply_ends_at_the_models_own_end_of_turn_token(tiny_model, monkeypatch):
    """Gemma-2 ends a turn with <end_of_turn>, listed in its generation config beside <eos>."""
    plain = generate_ids(tiny_model, PROMPTS[:1], max_new_tokens=10)[0]
    assert len(plain) > 3
    end_of_turn = plain[3]
    eos = tiny_model.tokenizer.eos_token_id
    monkeypatch.setattr(tiny_model.hf_model.generation_config, "eos_token_id", [eos, end_of_turn])
    assert stop_ids(tiny_model) == [eos, end_of_turn]
    assert generate_ids(tiny_model, PROMPTS[:1], max_new_tokens=10)[0] == plain[: plain.index(end_of_turn)]


def test_a_layer_outside_the_model_is_a_clear_error(tiny_model, directions):
    deep = Direction(directions[0].vector, tiny_model.n_layers + 7, -1, "dim")
    outside = rf"Layers \[{tiny_model.n_layers + 7}\] are outside this model's blocks 0..{tiny_model.n_layers - 1}"
    for intervention in (Add(deep), Ablate(directions, layers=[0, tiny_model.n_layers + 7])):
        with pytest.raises(mechrefusal.MechrefusalError, match=outside):
            with tiny_model.intervene(intervention):
                pass


def test_per_row_interventions_in_one_pass_equal_each_group_alone(tiny_model, directions):
    """Rows under Ablate, plain and Add in one batch give the logits each group gives alone."""
    from mechrefusal.interventions import per_row

    replies = ["Sure.", "I can't help with that, sorry.", "Four."]
    groups = [([0], Ablate(directions)), ([1], None), ([2], Add(directions[0], coeff=4.0))]
    batch = tiny_model.tokenize_replies(PROMPTS, replies)
    with torch.no_grad():
        with tiny_model.intervene(per_row(groups)):
            together = tiny_model.logits(batch)
        for (rows, intervention), prompt, reply in zip(groups, PROMPTS, replies):
            alone = tiny_model.tokenize_replies([prompt], [reply])
            with tiny_model.intervene(intervention):
                logits = tiny_model.logits(alone)
            width = alone.input_ids.shape[1]
            torch.testing.assert_close(together[rows[0], :width], logits[0], atol=1e-5, rtol=1e-5)
        plain = tiny_model.logits(batch)
    assert (together[0] - plain[0]).abs().max() > 1e-3 and (together[2] - plain[2]).abs().max() > 1e-3


def test_a_group_holding_every_row_is_not_masked(directions):
    from mechrefusal.interventions import OnRows, per_row

    assert per_row([([0, 1], Ablate(directions))]) == [Ablate(directions)]
    assert per_row([([0], Ablate(directions)), ([1], None)]) == [OnRows(Ablate(directions), (0,))]
