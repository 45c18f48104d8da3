"""The architecture and chat-template matrix: every path the toolkit claims for any family with a
TransformerLens adapter, on tiny random Llama, Qwen2, Gemma, Gemma-2 and GPT-2 chat models, each under
one template style (ChatML; ChatML with a default system prompt, as Qwen's; Gemma's turns without a
system role). Everything but weight orthogonalisation works on Gemma-2, which refuses it with a clear
error (see tests/README.md)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import mechrefusal
from mechrefusal import Ablate, Direction, DirectionSet
from mechrefusal.measure.generation import ComputeDtypeCache, generate_ids
from mechrefusal.models import autocast
from mechrefusal.models.tiny import build_tiny_model
from mechrefusal.train import TrainSettings
from mechrefusal.train.checkpoint import save_checkpoint
from mechrefusal.train.loop import _loss, _loss_terms, _replies
from mechrefusal.train.lora import add_lora, merge_lora
from mechrefusal.train.prefix import shared_prefix_length
from mechrefusal.train.targets import Example
from tests.parity import assert_batch_parity

PROMPTS = ["Hi", "Write a short poem about the sea and the wind at night", "What is 2 + 2?"]

# (architecture, template style, the text after the user's message, linear maps in a decoder layer)
MATRIX = [
    ("llama", "chatml", "<|im_end|>\n<|im_start|>assistant\n", 7),
    ("qwen2", "chatml-system", "<|im_end|>\n<|im_start|>assistant\n", 7),
    ("gemma", "no-system", "<end_of_turn>\n<start_of_turn>model\n", 7),
    ("gemma2", "no-system", "<end_of_turn>\n<start_of_turn>model\n", 7),
    ("gpt2", "chatml", "<|im_end|>\n<|im_start|>assistant\n", 6),  # split q, k, v; c_proj; c_fc; c_proj
]


@pytest.fixture(scope="session", params=MATRIX, ids=[f"{arch}-{style}" for arch, style, *_ in MATRIX])
def case(request, tmp_path_factory):
    """The case's parameters and the directory of its tiny model (built once in the session)."""
    architecture, style, post_instruction, n_linear = request.param
    directory = tmp_path_factory.mktemp(f"{architecture}-{style}")
    build_tiny_model(directory, architecture=architecture, template=style)
    return dict(architecture=architecture, style=style, post=post_instruction, n_linear=n_linear, dir=directory)


@pytest.fixture(scope="session")
def model(case) -> mechrefusal.Model:
    """The case's model as `mechrefusal.load` reads it (tests that change weights load their own copy)."""
    return mechrefusal.load(case["dir"], device="cpu")


def random_directions(d_model: int) -> DirectionSet:
    generator = torch.Generator().manual_seed(3)
    return DirectionSet([Direction(torch.randn(d_model, generator=generator), layer, -1, "random") for layer in (0, 1)])


def test_the_model_loads_with_its_architecture(case, model):
    assert model.hf_model.config.model_type == case["architecture"]
    assert (model.n_layers, model.d_model, model.dtype) == (2, 64, torch.float32)
    with torch.no_grad():
        logits = model.logits(model.tokenize(PROMPTS))
    assert logits.shape[:2] == model.tokenize(PROMPTS).input_ids.shape and torch.isfinite(logits).all()


def test_post_instruction_tokens_match_the_template(case, model):
    tokens = model.tokenizer.convert_ids_to_tokens(list(model.chat.post_instruction_ids))
    assert model.tokenizer.convert_tokens_to_string(tokens) == case["post"]
    batch = model.tokenize(PROMPTS)
    suffix = torch.tensor(model.chat.post_instruction_ids)
    assert torch.equal(batch.input_ids[:, model.post_instruction_positions], suffix.expand(len(PROMPTS), -1))
    default_system = case["style"] == "chatml-system"
    assert ("You are a helpful assistant." in model.format(["Hi"])[0]) == default_system


def test_a_system_message_reaches_the_prompt_with_or_without_a_system_role(case, model):
    from mechrefusal.models.chat import ChatFormat

    chat = ChatFormat(model.tokenizer, system="Be brief.")
    prompt = chat.prompt("Hi")
    assert "Be brief." in prompt and "helpful assistant" not in prompt
    assert chat.system_role == (case["style"] != "no-system")
    assert chat.post_instruction_ids == model.chat.post_instruction_ids


def test_padded_batch_equals_single_prompts(model):
    assert_batch_parity(model, PROMPTS)


def test_generation_equals_the_bridges_own_decoding_under_ablation(model):
    """Transformers' decoding loop over the bridged modules (what `generate_ids` runs) gives the bridge's own
    greedy replies token for token, on a left-padded batch, with the ablation hooks firing at every step."""
    intervention = Ablate(random_directions(model.d_model))
    ours = generate_ids(model, PROMPTS, max_new_tokens=8, intervention=intervention)
    batch = model.tokenize(PROMPTS)
    eos = model.tokenizer.eos_token_id
    with torch.no_grad(), model.intervene(intervention):
        tokens = model.bridge.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=eos,
            use_past_kv_cache=True,
            return_type="tokens",
            verbose=False,
        )
    bridge = [row[: row.index(eos)] if eos in row else row for row in tokens[:, batch.input_ids.shape[1] :].tolist()]
    assert ours == bridge  # that the hooks change replies is tested on Llama (test_interventions.py)


@pytest.mark.filterwarnings("ignore:.*bf16:UserWarning")  # asked bf16 on a CPU where it is slow
def test_bf16_decoding_scores_are_the_same_with_keys_and_values_cached_in_bf16(model):
    """`ComputeDtypeCache` keeps keys and values in bf16 under bf16 autocast (RoPE leaves keys in float32):
    every decoding step's logits are the same to the last bit as with transformers' own cache."""
    batch = model.tokenize(PROMPTS)
    eos = model.tokenizer.eos_token_id
    scores = []
    for cache in (ComputeDtypeCache, DynamicCache):
        with torch.no_grad(), autocast(model, "bfloat16"):
            out = model.hf_model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
                past_key_values=cache(config=model.hf_model.config),
                output_logits=True,
                return_dict_in_generate=True,
            )
        scores.append(torch.stack(out.logits))
    assert scores[0].shape[0] == 6
    torch.testing.assert_close(scores[0], scores[1], atol=0, rtol=0)


def test_ablation_removes_the_directions_from_the_residual_stream(model):
    """After every block (also Gemma-2's, whose post-norms would put an ablated direction back) the
    residual stream has no component along the ablated span."""
    directions = random_directions(model.d_model)
    q = directions.basis()
    seen = []
    names = [f"blocks.{layer}.hook_out" for layer in range(model.n_layers)]
    hooks = [(name, lambda activation, hook: seen.append((activation @ q).abs().max().item())) for name in names]
    with torch.no_grad(), model.intervene(Ablate(directions)), model.bridge.hooks(fwd_hooks=hooks):
        model.logits(model.tokenize(PROMPTS))
    assert len(seen) == model.n_layers and max(seen) < 1e-4


def test_ablation_hooks_equal_orthogonalized_weights(case, model, tmp_path):
    if case["architecture"] == "gemma2":
        with pytest.raises(mechrefusal.MechrefusalError, match="no weight edit can remove a direction"):
            mechrefusal.interventions.orthogonalize(model, random_directions(model.d_model), tmp_path / "orth")
        return
    directions = random_directions(model.d_model)
    edited = mechrefusal.load(
        mechrefusal.interventions.orthogonalize(model, directions, tmp_path / "orth"), device="cpu"
    )
    batch = model.tokenize(PROMPTS)
    with torch.no_grad():
        with model.intervene(Ablate(directions)):
            hooked = model.logits(batch)
        torch.testing.assert_close(edited.logits(batch), hooked, atol=1e-4, rtol=0)
        assert (model.logits(batch) - hooked).abs().max() > 1e-2  # the ablation did something
    assert len(edited.directions) == 2


def test_lora_adapters_merge_into_the_weights_they_adapt(case):
    model = mechrefusal.load(case["dir"], device="cpu")
    batch = model.tokenize(PROMPTS)
    with torch.no_grad():
        base = model.logits(batch)
    adapters = add_lora(model, [1], rank=4)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(batch), base, atol=0, rtol=0)  # B starts at zero
        for parameter in adapters:
            parameter.add_(0.1 * torch.randn_like(parameter))
        adapted = model.logits(batch)
    assert (adapted - base).abs().max() > 1e-2
    assert merge_lora(model) == case["n_linear"]
    with torch.no_grad():
        torch.testing.assert_close(model.logits(batch), adapted, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="session")
def stepped(case):
    """The case's model after one AdamW step of the fail-closed loss with an Ablate group, and its
    parameters before the step."""
    model, reference = mechrefusal.load(case["dir"], device="cpu"), mechrefusal.load(case["dir"], device="cpu")
    harmful = [Example(PROMPTS[1], "I can't help with that."), Example(PROMPTS[2], "Sorry, no.")]
    harmless = [Example(PROMPTS[0], "Hello! How can I help?"), Example("Name a colour", "Blue.")]
    settings = TrainSettings(method="fail-closed", dtype="float32", device="cpu")
    before = {name: p.detach().clone() for name, p in model.hf_model.named_parameters()}
    parameters = [p for p in model.hf_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    model.hf_model.train()
    loss = _loss(model, reference, harmful, harmless, settings, [([0, 1], Ablate(random_directions(model.d_model)))])
    loss.backward()
    optimizer.step()
    model.hf_model.eval()
    return model, before, loss.detach()


def test_a_shared_prompt_prefix_gives_the_whole_batch_losses(model):
    harmful = [Example(prompt, "I can't help with that.") for prompt in PROMPTS]
    harmless = [Example(PROMPTS[0], "Hello! How can I help?"), Example("Name a colour", "Blue.")]
    groups = [([0, 2], Ablate(random_directions(model.d_model))), ([1], None)]
    assert shared_prefix_length(model, [(_replies(model, harmful), groups)]) > 0  # the template's common start
    settings = TrainSettings(dtype="float32", device="cpu")
    with torch.no_grad():
        whole = _loss_terms(model, model, harmful, harmless, settings, groups, share_prefix=False)
        shared = _loss_terms(model, model, harmful, harmless, settings, groups, share_prefix=True)
    for got, want in zip(shared, whole):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_one_training_step_changes_the_weights(stepped):
    model, before, loss = stepped
    assert torch.isfinite(loss) and loss > 0
    after = dict(model.hf_model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any(".0." in name for name in changed) and any(".1." in name for name in changed)


def test_checkpoint_round_trip_keeps_logits_and_directions(stepped, tmp_path):
    model, _, _ = stepped
    directions = random_directions(model.d_model)
    loaded = mechrefusal.load(save_checkpoint(model, directions, tmp_path, 0, {"method": "test"}), device="cpu")
    batch = model.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(batch), model.logits(batch), atol=1e-5, rtol=0)
    assert [d.layer for d in loaded.directions] == [0, 1]
    for saved, original in zip(loaded.directions, directions):
        torch.testing.assert_close(saved.vector, original.vector)
