"""The embedded SmolLM2-135M-Instruct, loaded offline from the pinned wheel (slow tier)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mechrefusal import data
from tests.parity import assert_batch_parity

pytestmark = pytest.mark.slow


def test_embedded_model_shape(embedded_model):
    assert (embedded_model.n_layers, embedded_model.d_model) == (30, 576)
    tokens = embedded_model.tokenizer.convert_ids_to_tokens(list(embedded_model.chat.post_instruction_ids))
    assert "".join(tokens).replace("Ċ", "\n") == "<|im_end|>\n<|im_start|>assistant\n"


def test_embedded_padded_batch_equals_single_prompts(embedded_model):
    prompts = [data.load("harmful", "test")[0], "Hi", data.load("harmless", "test")[3]]
    assert_batch_parity(embedded_model, prompts)


def test_bridge_matches_the_raw_hf_model(embedded_model):
    batch = embedded_model.tokenize(["Name a fruit", "Explain what a compiler does in two sentences"])
    with torch.no_grad():
        hf_logits = embedded_model.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        torch.testing.assert_close(embedded_model.logits(batch)[:, -1], hf_logits[:, -1], atol=1e-4, rtol=1e-5)


def test_main_job_prints_a_measurement():
    result = subprocess.run(
        [sys.executable, "-m", "mechrefusal", "--n", "4"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "n_layers=30" in result.stdout
    assert "mean refusal score on 4 harmful test prompts" in result.stdout


@pytest.fixture(scope="module")
def candidate(embedded_model):
    """A mid-layer DIM candidate from a few prompts, massive dimensions zeroed (as the finder does)."""
    from mechrefusal.directions.dim import dim_candidates

    candidates, _ = dim_candidates(
        embedded_model, data.load("harmful", "train")[:8], data.load("harmless", "train")[:8], progress=False
    )
    from mechrefusal import Direction

    return Direction(candidates[15, -1], 15, -1, "dim")


def test_embedded_orthogonalized_weights_equal_hook_ablation(embedded_model, candidate, tmp_path):
    import mechrefusal
    from mechrefusal import Ablate

    edited = mechrefusal.load(mechrefusal.interventions.orthogonalize(embedded_model, candidate, tmp_path / "orth"))
    prompts = ["Name a fruit", data.load("harmful", "test")[1], "Explain what a compiler does in two sentences"]
    batch = embedded_model.tokenize(prompts)
    with torch.no_grad():
        with embedded_model.intervene(Ablate(candidate)):
            hooked = embedded_model.logits(batch)[:, -1]
        torch.testing.assert_close(edited.logits(batch)[:, -1], hooked, atol=1e-4, rtol=1e-5)
    hooked_text = mechrefusal.generate(embedded_model, prompts[:2], max_new_tokens=8, intervention=Ablate(candidate))
    assert hooked_text == mechrefusal.generate(edited, prompts[:2], max_new_tokens=8)


def test_analyze_cli_on_the_embedded_model(tmp_path):
    import json

    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mechrefusal.analyze",
            "--out",
            str(out),
            "--n-train",
            "8",
            "--n-val",
            "4",
            "--n-test",
            "4",
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["models"]
    assert entry["model"] == "smollm2-135m-instruct"
    assert [d["source"] for d in entry["directions"]] == ["fresh"]
    assert {"baseline_rate", "min_single_rate", "directions_to_break"} <= set(entry["independence"]["summary"])
    assert "directions to break refusal" in result.stdout
    assert (out / "report.html").exists() and (out / "model_directions.safetensors").exists()
    assert len(list((out / "figures").glob("*.png"))) == 7
