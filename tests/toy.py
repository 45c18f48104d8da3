"""A toy refusing model, trained in the test session: it refuses prompts from the harmful set and
answers the others, so the tests can check behaviour (not only shapes) in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from mechrefusal import Model, data
from mechrefusal.models.tiny import build_tiny_model

REFUSAL = "I cannot help with that."
COMPLIANCE = "Here is my answer."


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
        batch = model.tokenize_replies(instructions, [REFUSAL] * 16 + [COMPLIANCE] * 16)
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        targets = batch.input_ids[:, 1:][batch.reply_mask[:, 1:]]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][batch.reply_mask[:, 1:]], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.hf_model.eval()
    return model
