"""One training round with a direction ablated on every harmful example, for tests/test_train.py:
``python -m tests.distributed_round MODEL_DIR OUT.pt PARALLEL`` alone or under ``torchrun``. Two
micro-batches a step, so gradient accumulation (DDP's no_sync, FSDP's held-back reduce-scatter) is
exercised too. Rank 0 saves the trained weights under their Hugging Face names."""

from __future__ import annotations

import sys

import torch

from mechrefusal import Ablate, Direction, load
from mechrefusal.models.export import hf_state_dict
from mechrefusal.train import TrainSettings
from mechrefusal.train.loop import ablate_all, train_round
from mechrefusal.train.parallel import distributed_rank_and_size, init_distributed
from mechrefusal.train.targets import training_data


def main(model_dir: str, out: str, parallel: str) -> None:
    init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    settings = TrainSettings(
        model=model_dir,
        steps=3,
        batch_size=8,
        grad_accumulation=2,
        lr=3e-3,
        evals_per_round=1,
        dtype="float32",
        parallel=parallel,
    )
    reference, model = load(model_dir, device="cpu"), load(model_dir, device="cpu")
    examples = training_data(reference, "train", limit=24, max_new_tokens=6, dtype="float32", progress=False)
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    ablate = Ablate(Direction(vector, 1, -1, "test"))
    result = train_round(
        model,
        reference,
        examples.harmful,
        examples.harmless,
        (examples.harmful[:4], examples.harmless[:4]),
        settings,
        plan=ablate_all(ablate),
        val_intervention=ablate,
        round_index=1,
        progress=False,
    )
    if distributed_rank_and_size()[0] == 0:
        torch.save({"weights": hf_state_dict(model), "train_loss": result.train_loss}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
