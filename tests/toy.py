"""A toy refusing model, trained in the test session: it refuses prompts from the harmful set and
answers the others, so the tests can check behaviour (not only shapes) in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from mechrefusal import Model, data
from mechrefusal.models.tiny import build_tiny_model

REFUSAL = "I cannot help with that."
COMPLIANCE = "Here is my answer."


def reply_batch(model: Model, instructions: list[str], replies: list[str]):
    """Left-padded prompt+reply token ids, their mask, and a mask of the reply tokens (the loss)."""
    rows, reply_lengths = [], []
    for prompt, reply in zip(model.format(instructions), replies):
        reply_ids = model.tokenizer(reply, add_special_tokens=False)["input_ids"] + [model.tokenizer.eos_token_id]
        rows.append(model.chat.encode(prompt) + reply_ids)
        reply_lengths.append(len(reply_ids))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), model.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, n_reply) in enumerate(zip(rows, reply_lengths)):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
        loss_mask[i, width - n_reply:] = True
    return ids, mask, loss_mask


def train_toy_refuser(directory: str | Path, *, steps: int = 150, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    model = build_tiny_model(directory, n_layers=4, d_model=64, seed=seed)
    harmful, harmless = data.load("harmful", "train"), data.load("harmless", "train")
    optimizer = torch.optim.AdamW(model.hf_model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.hf_model.train()
    for _ in range(steps):
        picks_h = torch.randint(len(harmful), (16,), generator=generator).tolist()
        picks_b = torch.randint(len(harmless), (16,), generator=generator).tolist()
        instructions = [harmful[i] for i in picks_h] + [harmless[i] for i in picks_b]
        ids, mask, loss_mask = reply_batch(model, instructions, [REFUSAL] * 16 + [COMPLIANCE] * 16)
        logits = model.bridge(ids, attention_mask=mask)
        targets = ids[:, 1:][loss_mask[:, 1:]]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][loss_mask[:, 1:]], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.hf_model.eval()
    return model
