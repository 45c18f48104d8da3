"""Tiny random chat models for tests: a small BPE tokenizer and a 2-layer Llama, built in seconds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from mechrefusal import data
from mechrefusal.models.loading import load
from mechrefusal.models.model import Model

# A ChatML template written for the tiny models (no default system prompt).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(
    directory: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    seed: int = 0,
) -> Model:
    """Write a random-weight Llama chat model with its own tokenizer to ``directory`` and load it.

    ``corpus`` trains the BPE tokenizer (default: the bundled instruction sets), so the words of the
    test prompts are few tokens each.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    if corpus is None:
        corpus = [text for name in ("harmful", "harmless", "overrefusal") for text in data.load(name)]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(corpus) + ["I'm sorry, I can't help with that. Sure, here is"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # the bridge reads the tokenizer's name_or_path: reload from disk
    return load(directory, device="cpu")
