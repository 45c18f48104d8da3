"""Weight orthogonalisation: the permanent form of directional ablation.

Every matrix that writes into the residual stream (token and positional embeddings, attention output
projection, MLP output projection, and their biases) loses its component along the directions:
``W <- W - Q Q^T W`` (GPT-2's ``Conv1D`` stores ``W^T``, so there ``W^T <- W^T - W^T Q Q^T``).
The result gives the same logits as hook ablation with `Ablate` (tested to 1e-4 in float32).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from mechrefusal.core.directions import SAVED_FILE, Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions.residual import POST_NORM_SITES, ablation_sites
from mechrefusal.models.export import hf_state_dict, residual_writer_names, save_hf_directory, unembed_name
from mechrefusal.models.model import Model


def orthogonalize(
    model: Model, directions: Direction | DirectionSet | Sequence[Direction], out_dir: str | Path
) -> Path:
    """Write a Hugging Face directory whose weights have ``directions`` projected out.

    The model itself is not changed. Tied input/output embeddings are untied (only the input embedding
    writes into the residual stream). The directions are saved beside the weights as
    ``directions.safetensors``; `mechrefusal.load(out_dir)` reads the result.
    """
    if ablation_sites(model) == POST_NORM_SITES:
        raise SettingError(
            f"{model.spec!r} normalises each block's attention and MLP outputs before adding them to the residual "
            "stream (Gemma-2/3 style), and no weight edit can remove a direction after such a norm; use the Ablate "
            "intervention (model.intervene(Ablate(directions))) instead."
        )
    directions = as_direction_set(directions)
    directions.check_width(model.d_model)
    basis = directions.basis()
    state = dict(hf_state_dict(model))
    config = copy.deepcopy(model.hf_model.config)
    embeddings, writers = residual_writer_names(model)
    if getattr(config, "tie_word_embeddings", False):
        state[f"{unembed_name(model)}.weight"] = state[f"{embeddings[0]}.weight"].detach().clone()
        config.tie_word_embeddings = False
    q = basis.to(state[f"{embeddings[0]}.weight"].device)
    transposed = _transposed_writers(model, writers)
    for key in [f"{prefix}.weight" for prefix in embeddings] + [f"{prefix}.weight" for prefix in transposed]:
        tensor = state[key].float()  # rows are residual-stream vectors
        state[key] = (tensor - (tensor @ q) @ q.T).to(state[key].dtype)
    for prefix in writers:
        for suffix in ("bias",) if prefix in transposed else ("weight", "bias"):
            key = f"{prefix}.{suffix}"
            if key in state:
                tensor = state[key].float()
                state[key] = (tensor - q @ (q.T @ tensor)).to(state[key].dtype)
    out_dir = Path(out_dir)
    save_hf_directory(model, out_dir, state_dict=state, config=config)
    directions.save(out_dir / SAVED_FILE)
    return out_dir


def _transposed_writers(model: Model, writers: list[str]) -> set[str]:
    """The writers stored as ``[in, d_model]`` (GPT-2's ``Conv1D``) rather than ``nn.Linear``'s ``[d_model, in]``
    (told by type: a square projection's shape cannot tell them apart)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model.hf_model.config)
    return {prefix for prefix in writers if isinstance(skeleton.get_submodule(prefix), Conv1D)}
