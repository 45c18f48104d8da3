"""Tiny random chat models for tests: a small BPE tokenizer and a 2-layer Llama, Qwen2, Gemma or GPT-2,
built in seconds, with one of three chat-template styles."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from mechrefusal import data
from mechrefusal.core.errors import SettingError
from mechrefusal.models.loading import load
from mechrefusal.models.model import Model

# A ChatML template written for the tiny models (no default system prompt).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML with a default system prompt when the messages bring none, as Qwen2's template does.
SYSTEM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}" + TINY_CHAT_TEMPLATE
)
# Gemma's turns: no system role (a system message is an error), the reply's role is "model".
NO_SYSTEM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# Template style -> (template, special tokens, bos, eos = pad, unk).
TEMPLATES = {
    "chatml": (TINY_CHAT_TEMPLATE, SPECIAL_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "chatml-system": (SYSTEM_CHAT_TEMPLATE, SPECIAL_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "no-system": (
        NO_SYSTEM_CHAT_TEMPLATE,
        ["<unk>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<end_of_turn>",
        "<unk>",
    ),
}
ARCHITECTURES = ("llama", "qwen2", "gemma", "gemma2", "gpt2")


def build_tiny_model(
    directory: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    seed: int = 0,
    architecture: str = "llama",
    template: str = "chatml",
) -> Model:
    """Write a random-weight chat model with its own tokenizer to ``directory`` and load it.

    ``corpus`` trains the BPE tokenizer (default: the bundled instruction sets), so the words of the
    test prompts are few tokens each. ``architecture`` is one of `ARCHITECTURES`; ``template`` one of
    `TEMPLATES` (ChatML; ChatML with a default system prompt; Gemma's turns without a system role).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    if architecture not in ARCHITECTURES or template not in TEMPLATES:
        raise SettingError(
            f"Unknown tiny model {architecture!r} / {template!r}: pick from {ARCHITECTURES} / {list(TEMPLATES)}."
        )
    chat_template, special_tokens, bos, eos, unk = TEMPLATES[template]

    directory = Path(directory)
    if corpus is None:
        corpus = [text for name in ("harmful", "harmless", "overrefusal") for text in data.load(name)]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(corpus) + ["I'm sorry, I can't help with that. Sure, here is"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token=eos,
        pad_token=eos,
        unk_token=unk,
    )
    tokenizer.chat_template = chat_template

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        _config(architecture, len(tokenizer), n_layers, d_model, n_heads, tokenizer)
    )
    if architecture == "gemma2":  # gains away from their uniform init, as in a trained model (the post-norms
        with torch.no_grad():  # then stop commuting with a projection)
            for name, parameter in model.named_parameters():
                if "norm" in name:
                    parameter.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # the bridge reads the tokenizer's name_or_path: reload from disk
    return load(directory, device="cpu")


def _config(architecture: str, vocab_size: int, n_layers: int, d_model: int, n_heads: int, tokenizer):
    """A Hugging Face config of the architecture's usual shape (Gemma, Gemma-2 and GPT-2 tie their embeddings)."""
    from transformers import Gemma2Config, GemmaConfig, GPT2Config, LlamaConfig, Qwen2Config

    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if architecture == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=512, **ids
        )
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=512,
        **ids,
    )
    if architecture == "gemma":
        return GemmaConfig(**shape, head_dim=d_model // n_heads, tie_word_embeddings=True)
    if architecture == "gemma2":  # logit softcapping, sliding-window layers, post-attention and post-MLP norms
        return Gemma2Config(
            **shape,
            head_dim=d_model // n_heads,
            tie_word_embeddings=True,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            sliding_window=4,
        )
    config_class = Qwen2Config if architecture == "qwen2" else LlamaConfig
    return config_class(**shape, tie_word_embeddings=False)
