"""The trainer on the toy refusing model: targets, rounds, checkpoints, resume after a kill."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, CheckpointError, SubstringJudge, data
from mechrefusal.core.checkpoint_record import METADATA
from mechrefusal.core.cli import read_settings_file, settings_from_dict
from mechrefusal.core.directions import DirectionSet
from mechrefusal.measure.evaluation import refusal_rate
from mechrefusal.models.export import hf_state_dict
from mechrefusal.reproduce import analysis_script
from mechrefusal.train import TrainSettings, run
from mechrefusal.train.checkpoint import complete_rounds
from mechrefusal.train.search import max_cosine
from mechrefusal.train.settings import SearchSettings
from mechrefusal.train.targets import leading_shares, training_data


def toy_settings(toy_dir, out, **overrides) -> TrainSettings:
    settings = dict(
        method="fail-closed",
        model=str(toy_dir),
        out=str(out),
        rounds=1,
        steps=6,
        batch_size=8,
        lr=3e-3,
        train_layers="all",
        n_examples=48,
        max_new_tokens=6,
        dtype="float32",
        search=SearchSettings(max_kl=1.0),
        evals_per_round=2,
        device="cpu",
    )
    return TrainSettings(**{**settings, **overrides})


def cli_flags(settings: TrainSettings) -> list[str]:
    """The ``python -m mechrefusal.train`` flags of the settings ``toy_settings`` sets."""
    flags = []
    for key in (
        "model",
        "out",
        "method",
        "rounds",
        "steps",
        "batch_size",
        "lr",
        "train_layers",
        "n_examples",
        "max_new_tokens",
        "dtype",
        "evals_per_round",
        "parallel",
        "device",
    ):
        flags += [f"--{key.replace('_', '-')}", str(getattr(settings, key))]
    flags += ["--max-kl", str(settings.search.max_kl)]  # the flag's name from before the settings had groups
    return flags + (["--activation-checkpointing"] if settings.activation_checkpointing else [])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="Unknown training method 'ppo'"):
        TrainSettings(method="ppo")
    with pytest.raises(ValueError, match="split evenly"):
        TrainSettings(batch_size=6, grad_accumulation=2)
    assert TrainSettings(train_layers="2:5").layer_range(30) == range(2, 5)
    assert TrainSettings(train_layers="all").layer_range(4) == range(4)
    with pytest.raises(ValueError, match="outside the model"):
        TrainSettings(train_layers="20:40").layer_range(30)
    with pytest.raises(ValueError, match="start:stop"):
        TrainSettings(train_layers="ten").layer_range(30)
    with pytest.raises(ValueError, match="Unknown parallel mode 'tp'"):
        TrainSettings(parallel="tp")
    with pytest.raises(ValueError, match="LoRA trains under --parallel ddp"):
        TrainSettings(parallel="fsdp", lora_rank=4)
    with pytest.raises(ValueError, match="drawn anew"):
        TrainSettings(method="deeprefusal", activation_checkpointing=True)


def test_targets_are_the_models_own_judged_answers(toy):
    targets = training_data(toy, "train", limit=24, max_new_tokens=6, dtype="float32", progress=False)
    assert targets.own_refusals
    judge = SubstringJudge()
    assert all(v.refused for v in judge.judge([], [e.reply for e in targets.harmful]))
    assert not any(v.refused for v in judge.judge([], [e.reply for e in targets.harmless]))
    assert {e.instruction for e in targets.harmful} <= set(data.load("harmful", "train"))


def test_a_model_that_never_refuses_gets_the_teams_refusals(tiny_model):
    targets = training_data(tiny_model, "train", limit=12, max_new_tokens=4, dtype="float32", progress=False)
    assert not targets.own_refusals
    assert len(targets.harmful) == 12
    assert {e.reply for e in targets.harmful} <= set(data.refusal_replies())


def test_a_non_refusing_model_is_recognised_after_half_its_harmful_prompts(tiny_model, empty_home, monkeypatch):
    from mechrefusal.train import targets as targets_module

    monkeypatch.setattr(targets_module, "GENERATION_BATCH_SIZE", 4)
    generated: list[int] = []
    real = targets_module.generate
    monkeypatch.setattr(targets_module, "generate", lambda m, p, **k: generated.append(len(p)) or real(m, p, **k))
    result = training_data(tiny_model, "train", limit=20, max_new_tokens=3, dtype="float32", progress=False)
    assert not result.own_refusals and len(result.harmful) == 20
    # harmless (20), then harmful 4 at a time: with none refused, 12 prompts leave 8 < 10 that could refuse
    assert generated == [20, 4, 4, 4]


def test_a_cap_on_the_examples_keeps_each_parts_share(tiny_model, empty_home, monkeypatch):
    from mechrefusal.train import targets as targets_module

    assert leading_shares([list("abcdef"), list("xyz")], 4) == list("abcx")  # 2.67 and 1.33: the larger remainder
    assert leading_shares([list("ab"), []], 5) == leading_shares([list("ab"), []], 0) == list("ab")
    asked: list[list[str]] = []
    real = targets_module.generate
    monkeypatch.setattr(targets_module, "generate", lambda m, p, **k: asked.append(p) or real(m, p, **k))
    training_data(tiny_model, "train", limit=48, max_new_tokens=2, dtype="float32", progress=False)
    edgy = set(data.load("overrefusal", "train"))
    # 338 harmless then 104 edgy prompts: a plain [:48] of the two joined had no edgy prompt
    assert len(asked[0]) == 48 and sum(prompt in edgy for prompt in asked[0]) == round(48 * 104 / 442)


def test_targets_are_cached(toy, monkeypatch):
    first = training_data(toy, "train", limit=24, max_new_tokens=6, dtype="float32", progress=False)
    monkeypatch.setattr("mechrefusal.train.targets.generate", lambda *a, **k: pytest.fail("regenerated"))
    assert training_data(toy, "train", limit=24, max_new_tokens=6, dtype="float32", progress=False) == first


@pytest.fixture(scope="module")
def trained(toy_dir, tmp_path_factory, device):
    """A fail-closed run of the toy on each available device (the checkpoints and resume tests use it)."""
    out = tmp_path_factory.mktemp("run")
    return out, run(toy_settings(toy_dir, out, device=device), progress=False)


def test_rounds_write_complete_checkpoints(trained):
    out, written = trained
    assert [path.name for path in written][0] == "round-0"
    assert complete_rounds(out) == list(range(len(written)))
    meta = json.loads((written[0] / "mechrefusal.json").read_text())
    assert meta["method"] == "fail-closed" and meta["round"] == 0 and meta["settings"]["steps"] == 6
    replayed = settings_from_dict(TrainSettings, read_settings_file(written[0] / "settings.toml", TrainSettings))
    assert replayed == settings_from_dict(TrainSettings, meta["settings"]) and replayed.search.max_kl == 1.0
    assert {"training", "val_refusal_score_harmful", "direction_found"} <= set(meta["metrics"])
    history = meta["metrics"]["training"]
    assert len(history["val_loss"]) == len(history["val_safety_loss"]) == len(history["val_utility_loss"]) > 0
    for total, safety, utility in zip(history["val_loss"], history["val_safety_loss"], history["val_utility_loss"]):
        assert total == pytest.approx((safety + utility) / 2, rel=1e-5)  # as many harmful as harmless examples
    assert set(meta["versions"]) >= {"torch", "transformers", "transformer_lens"} and meta["wall_time_s"] > 0


def test_checkpoints_load_back_with_their_directions(trained):
    _, written = trained
    model = mechrefusal.load(written[0], device="cpu")
    assert model.directions is not None and len(model.directions) == 1
    assert model.directions[0].method == "rdo" and model.directions[0].provenance["passed_filters"]


def test_analyze_runs_on_a_checkpoint(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))  # PNGs are test_analyze's business
    _, written = trained
    report = mechrefusal.analyze(
        written[0], out=tmp_path, n_train=16, n_val=8, n_test=8, max_new_tokens=4, max_kl=1.0, progress=False
    )
    entry = report.models[0]
    assert entry.model == str(written[0])
    assert [d.source for d in entry.directions] == ["saved", "fresh"]


def test_trainer_table_ablates_the_next_rounds_direction_with_all_saved(trained, monkeypatch, capsys):
    _, written = trained
    checkpoint = str(written[-1])
    script = analysis_script("trainer_table")
    monkeypatch.setattr(sys, "argv", ["trainer_table.py", checkpoint, "--n", "4", "--max-new-tokens", "2", "--fresh"])
    script.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert "| all saved + next ablated |" in lines[0] and len(lines[2].split(" | ")) == len(lines[0].split(" | "))
    record = json.loads(lines[-1])
    model = mechrefusal.load(checkpoint, device="cpu")
    saved = model.directions
    found = script.fresh_direction(model, checkpoint, "dim", saved)
    assert len(saved) == 2 and max_cosine(found, saved) < 1e-4  # the next round's search: orthogonal to the saved
    assert (record["next_direction"]["layer"], record["next_direction"]["position"]) == (found.layer, found.position)
    expected = refusal_rate(
        model,
        data.load("harmful", "test")[:4],
        intervention=Ablate(DirectionSet([*saved, found])),
        max_new_tokens=2,
        dtype="auto",
    )
    assert record["rates"]["harmful, all saved + next ablated"] == expected
    assert record["fresh_direction"]["layer"] == script.fresh_direction(model, checkpoint, "dim").layer


def test_existing_rounds_need_resume(trained, toy_dir, device):
    out, _ = trained
    with pytest.raises(CheckpointError, match="pass --resume"):
        run(toy_settings(toy_dir, out, device=device), progress=False)
    with pytest.raises(CheckpointError, match=r"settings \['steps'\] differ"):
        run(toy_settings(toy_dir, out, steps=7, resume=True), progress=False)


def test_a_finished_run_resumed_with_more_rounds_trains_only_the_new_ones(trained, toy_dir, tmp_path, device):
    out, written = trained
    longer = tmp_path / "longer"
    shutil.copytree(out, longer)
    more = run(toy_settings(toy_dir, longer, rounds=len(written), resume=True, device=device), progress=False)
    assert [path.name for path in more] == [f"round-{len(written)}"]
    assert complete_rounds(longer)[: len(written)] == complete_rounds(out)


def test_a_run_that_ended_for_want_of_a_direction_resumes_to_nothing(toy_dir, tmp_path):
    settings = toy_settings(toy_dir, tmp_path / "none", rounds=2, search=SearchSettings(max_kl=1.0, min_induce=1e9))
    with pytest.warns(UserWarning, match="stops here"):
        assert [path.name for path in run(settings, progress=False)] == ["round-0"]
    with pytest.warns(UserWarning, match="ended after round 0"):  # before: round 1 failed, nothing to ablate
        assert run(replace(settings, resume=True), progress=False) == []
    assert complete_rounds(settings.out) == [0]


def test_a_fail_closed_run_whose_last_search_found_nothing_is_not_trained_further(trained, toy_dir, tmp_path):
    out, written = trained
    ended = tmp_path / "ended"
    shutil.copytree(out, ended)
    metadata = ended / written[-1].name / METADATA
    saved = json.loads(metadata.read_text())
    saved["metrics"]["direction_found"] = False  # as if the last round's search had found no new direction
    metadata.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=f"ended after round {len(written) - 1}"):
        assert run(toy_settings(toy_dir, ended, rounds=len(written), resume=True, device="cpu"), progress=False) == []


def test_resume_after_a_kill_gives_the_uninterrupted_result(trained, toy_dir, tmp_path, device):
    reference_out, written = trained
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mechrefusal.train", *cli_flags(toy_settings(toy_dir, out, device=device))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not complete_rounds(out) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert complete_rounds(out)[:1] == [0]
    resumed = run(toy_settings(toy_dir, out, resume=True, device=device), progress=False)
    final = written[-1].name
    assert complete_rounds(out) == complete_rounds(reference_out)
    a = hf_state_dict(mechrefusal.load(out / final, device="cpu"))
    b = hf_state_dict(mechrefusal.load(reference_out / final, device="cpu"))
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    assert not list(out.glob(".tmp-*"))
    assert [path.name for path in resumed] == [path.name for path in written[1:]]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m ARGS`` on CPU (gloo), one thread a process."""
    import os

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )


def test_two_processes_reach_the_weights_of_one(toy_dir, tmp_path):
    """torchrun with 2 processes (gloo; FSDP and activation checkpointing from the CLI) and the same
    effective batch gives the one-process weights; rank 0 writes the gathered checkpoint."""
    one = toy_settings(toy_dir, tmp_path / "one", method="sft", steps=3, n_examples=24, evals_per_round=1)
    run(one, progress=False)
    two = replace(one, out=str(tmp_path / "two"), parallel="fsdp", activation_checkpointing=True)
    double = torchrun("mechrefusal.train", *cli_flags(two))
    assert double.returncode == 0, double.stderr[-2000:]
    meta = json.loads((tmp_path / "two" / "round-0" / "mechrefusal.json").read_text())
    assert meta["processes"] == 2 and meta["settings"]["parallel"] == "fsdp"
    a = hf_state_dict(mechrefusal.load(tmp_path / "one" / "round-0", device="cpu"))
    b = hf_state_dict(mechrefusal.load(tmp_path / "two" / "round-0", device="cpu"))
    changed = hf_state_dict(mechrefusal.load(toy_dir, device="cpu"))
    assert_same_updates(b, a, changed)
    assert any((a[name] - changed[name]).abs().max() > 1e-4 for name in a)  # training did move the weights
    one_meta = json.loads((tmp_path / "one" / "round-0" / "mechrefusal.json").read_text())
    losses = [meta["metrics"]["training"]["train_loss"], one_meta["metrics"]["training"]["train_loss"]]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # both processes' examples, not rank 0's half


def test_ddp_and_fsdp_reach_the_weights_of_one_process_under_an_ablation(toy_dir, tmp_path):
    """A round with a direction ablated on every harmful example and two micro-batches a step (see
    tests/distributed_round.py): DDP and FSDP on 2 processes end at the one-process weights."""
    from tests.distributed_round import main

    main(str(toy_dir), str(tmp_path / "one.pt"), "ddp")
    one = torch.load(tmp_path / "one.pt")["weights"]
    original = hf_state_dict(mechrefusal.load(toy_dir, device="cpu"))
    assert any((one[name] - original[name]).abs().max() > 1e-4 for name in one)
    for parallel in ("ddp", "fsdp"):
        two = torchrun("tests.distributed_round", str(toy_dir), str(tmp_path / f"{parallel}.pt"), parallel)
        assert two.returncode == 0, two.stderr[-2000:]
        weights = torch.load(tmp_path / f"{parallel}.pt")["weights"]
        assert_same_updates(weights, one, original)


def assert_same_updates(got: dict, want: dict, original: dict, rel: float = 1e-2) -> None:
    """Two trainings from ``original`` ended at the same weights: each tensor differs by at most ``rel`` of
    its update. Not elementwise: AdamW's normalised step turns float noise in a near-zero gradient (another
    batching, another CPU's kernels) into a visible step on single elements (2.7e-5 of a 3e-3 step on an
    AVX2-only EPYC), while a wrong effective batch changes whole updates."""
    for name in want:
        update = (want[name] - original[name]).norm().item()
        difference = (got[name] - want[name]).norm().item()
        assert difference <= rel * update + 1e-6, f"{name}: {difference:.3g} apart, update {update:.3g}"


def test_activation_checkpointing_gives_the_same_loss_and_gradients(toy, toy_dir):
    from mechrefusal import Ablate, Direction
    from mechrefusal.train.loop import _loss
    from mechrefusal.train.parallel import activation_checkpointing

    model, reference = mechrefusal.load(toy_dir, device="cpu"), mechrefusal.load(toy_dir, device="cpu")
    examples = training_data(toy, "train", limit=8, max_new_tokens=6, dtype="float32", progress=False)
    ablate = Ablate(Direction(torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)), 2, -1, "t"))
    calls = []
    model.hf_model.train()

    def loss_and_gradients():
        model.hf_model.zero_grad(set_to_none=True)
        calls.clear()
        with model.bridge.hooks(fwd_hooks=[("blocks.1.hook_in", lambda activation, hook: calls.append(1))]):
            loss = _loss(
                model,
                reference,
                examples.harmful[:4],
                examples.harmless[:4],
                toy_settings(toy_dir, "unused"),
                [([0, 1, 2, 3], ablate)],
                share_prefix=False,  # as `train_round` does under checkpointing
            )
            loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.hf_model.named_parameters()}

    plain_loss, plain = loss_and_gradients()
    assert len(calls) == 2  # one forward pass each for the harmful and the harmless examples
    with activation_checkpointing(model):
        checkpointed_loss, checkpointed = loss_and_gradients()
        assert len(calls) == 4  # both layers ran again in the backward pass, their hooks with them
    torch.testing.assert_close(checkpointed_loss, plain_loss, atol=0, rtol=0)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)
    assert "forward" not in vars(model.bridge.blocks[0])  # the layers' own forward is back


def test_baselines_train_a_round_from_a_shared_round_zero(trained, toy_dir, tmp_path):
    round_zero = trained[1][0]
    original = hf_state_dict(mechrefusal.load(round_zero, device="cpu"))
    for method in ("refat", "deeprefusal"):
        written = run(
            toy_settings(toy_dir, tmp_path / method, method=method, refat_every=2, start_from=str(round_zero)),
            progress=False,
        )
        assert [path.name for path in written] == ["round-1"]  # round 0 was copied, not trained
        meta = json.loads((written[0] / "mechrefusal.json").read_text())
        assert meta["method"] == method and meta["round"] == 1
        assert len(mechrefusal.load(written[0], device="cpu").directions) == 1
        copied = json.loads((tmp_path / method / "round-0" / "mechrefusal.json").read_text())
        assert copied["copied_from"] == str(round_zero) and copied["settings"]["method"] == method
        copy = hf_state_dict(mechrefusal.load(tmp_path / method / "round-0", device="cpu"))
        assert all(torch.equal(copy[name], original[name]) for name in original)


def test_a_shared_round_zero_must_match_and_be_a_round_zero(trained, toy_dir, tmp_path):
    _, written = trained
    with pytest.raises(CheckpointError, match=r"round-0 settings \['lr'\] differ"):
        run(toy_settings(toy_dir, tmp_path / "other", lr=1e-3, start_from=str(written[0])), progress=False)
    with pytest.raises(CheckpointError, match="needs a round-0 checkpoint"):
        run(toy_settings(toy_dir, tmp_path / "late", start_from=str(written[-1])), progress=False)


def test_lora_adapters_merge_into_the_weights_they_adapt(tiny_model, tmp_path):
    from mechrefusal.models.tiny import build_tiny_model
    from mechrefusal.train.lora import add_lora, merge_lora

    model = build_tiny_model(tmp_path / "lora")
    batch = model.tokenize(["Hi there", "Write a poem about rain"])
    with torch.no_grad():
        base = model.logits(batch)
    adapters = add_lora(model, [1], rank=4)
    assert adapters and all(p.requires_grad for p in adapters)
    assert not any(p.requires_grad for n, p in model.hf_model.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(batch), base, atol=0, rtol=0)  # B starts at zero
        for parameter in adapters:
            parameter.add_(0.1 * torch.randn_like(parameter))
        adapted = model.logits(batch)
    assert (adapted - base).abs().max() > 1e-2
    assert merge_lora(model) == 7  # q, k, v, o, gate, up, down of layer 1
    with torch.no_grad():
        torch.testing.assert_close(model.logits(batch), adapted, atol=1e-5, rtol=1e-5)
    assert not [n for n, _ in model.hf_model.named_parameters() if "lora_" in n]
    with pytest.raises(ValueError, match="rank must be at least 1"):
        add_lora(model, [1], rank=0)


def test_a_lora_round_changes_only_the_adapted_layers(toy_dir, tmp_path):
    written = run(
        toy_settings(toy_dir, tmp_path / "lora", method="sft", lora_rank=4, train_layers="2:4"), progress=False
    )
    trained = hf_state_dict(mechrefusal.load(written[0], device="cpu"))
    original = hf_state_dict(mechrefusal.load(toy_dir, device="cpu"))
    assert set(trained) == set(original)  # plain Hugging Face layout, adapters merged away
    moved = {name for name in original if (trained[name] - original[name]).abs().max() > 1e-6}
    assert moved and all(name.startswith(("model.layers.2.", "model.layers.3.")) for name in moved)
    with pytest.raises(ValueError, match="lora_rank must be 0"):
        TrainSettings(lora_rank=-1)
    with pytest.raises(ValueError, match="Unknown direction finder 'pca'"):
        TrainSettings(finder="pca")


def test_plain_share_trains_that_share_of_harmful_examples_without_ablation(tiny_model):
    from mechrefusal import Ablate, Direction, DirectionSet
    from mechrefusal.train.methods.fail_closed import FailClosed

    directions = DirectionSet([Direction(torch.ones(tiny_model.d_model), 1, -1, "test")])

    def safety_plan(**settings):
        generator = torch.Generator().manual_seed(0)
        method = FailClosed(TrainSettings(**settings))
        return method.safety_plan(tiny_model, directions, round_index=1, generator=generator)

    every_one = safety_plan()(1, 8)
    assert len(every_one) == 1 and every_one[0][0] == list(range(8)) and isinstance(every_one[0][1], Ablate)
    plan = safety_plan(plain_share=0.25)
    plain = ablated = 0
    for step in range(200):
        (under, intervention), (without, none) = plan(step, 8)
        assert sorted(under + without) == list(range(8)) and isinstance(intervention, Ablate) and none is None
        plain, ablated = plain + len(without), ablated + len(under)
    assert abs(plain / (plain + ablated) - 0.25) < 0.03
    with pytest.raises(ValueError, match=r"plain_share must lie in \[0, 1\)"):
        TrainSettings(plain_share=1.0)


def test_ablated_utility_share_takes_the_harmless_kl_under_the_ablation(toy, toy_dir):
    from mechrefusal import Ablate, Add, Direction, DirectionSet
    from mechrefusal.train import METHODS
    from mechrefusal.train.loop import _loss

    directions = DirectionSet(
        [Direction(torch.randn(toy.d_model, generator=torch.Generator().manual_seed(1)), 2, -1, "t")]
    )
    generator = torch.Generator().manual_seed(0)

    def utility_plan(method, share):
        settings = TrainSettings(method=method, ablated_utility_share=share)
        return METHODS.get(method)(settings).utility_plan(directions, round_index=1, generator=generator)

    assert utility_plan("refat", 1.0) is None
    assert utility_plan("fail-closed", 0.0) is None
    (ablated, intervention), (plain, _) = utility_plan("fail-closed", 1.0)(0, 4)
    assert ablated == [0, 1, 2, 3] and plain == [] and isinstance(intervention, Ablate)

    examples = training_data(toy, "train", limit=8, max_new_tokens=6, dtype="float32", progress=False)
    harmful, harmless = examples.harmful[:4], examples.harmless[:4]
    settings = toy_settings(toy_dir, "unused")
    reference = mechrefusal.load(toy_dir, device="cpu")
    with torch.no_grad():
        default = _loss(toy, reference, harmful, harmless, settings, [([0, 1, 2, 3], None)])
        explicit = _loss(
            toy, reference, harmful, harmless, settings, [([0, 1, 2, 3], None)], [([0, 1], None), ([2, 3], None)]
        )
        pushed = Add(Direction(10 * directions[0].unit, 1, -1, "t"))
        under = _loss(toy, reference, harmful, harmless, settings, [([0, 1, 2, 3], None)], [([2, 3], pushed)])
    torch.testing.assert_close(explicit, default)  # split into groups: the same mean
    assert under > default + 0.05  # the harmless KL is taken under the utility group's intervention


def test_a_run_resumes_from_checkpoints_older_than_a_new_setting(trained, toy_dir, tmp_path):
    from mechrefusal.train.job import _changed

    _, written = trained
    saved = json.loads((written[-1] / "mechrefusal.json").read_text())["settings"]
    del saved["plain_share"]  # written before the setting existed: it counts as its default
    same = dict(out=saved["out"], device=saved["device"])
    assert _changed(saved, toy_settings(toy_dir, **same), ignore=("resume",)) == []
    assert _changed(saved, toy_settings(toy_dir, **same, plain_share=0.5), ignore=("resume",)) == ["plain_share"]


def test_an_rdo_direction_that_fails_the_filters_gives_way_to_its_dim_anchor(tiny_model, monkeypatch):
    from mechrefusal import Direction, DirectionSet
    from mechrefusal.directions import SelectionFilters, rdo_finder
    from mechrefusal.train import search

    def scored(method, kl):
        scores = {"bypass": -1.0, "induce": 0.5, "kl": kl, "passed_filters": kl <= 0.5}
        return Direction(torch.ones(tiny_model.d_model), 1, -1, method, scores)

    def fake(kl):
        return lambda model, harmful, harmless, anchor, **kwargs: scored("rdo", kl)

    def next_direction(**options):
        anchor = scored("dim", 0.1)  # the finder's own scores are kept: nothing runs on the model
        filters = SelectionFilters(max_kl=0.5)
        return search.next_direction(tiny_model, DirectionSet(), finder="rdo", filters=filters, dim=anchor, **options)

    monkeypatch.setattr(rdo_finder, "rdo", fake(kl=0.9))
    chosen = next_direction(progress=False)
    assert chosen.method == "dim" and chosen.provenance["rdo_rejected"]["kl"] == 0.9
    unguarded = next_direction(fallback=False)
    assert unguarded.method == "rdo" and not unguarded.provenance["passed_filters"]
    monkeypatch.setattr(rdo_finder, "rdo", fake(kl=0.2))
    assert next_direction().method == "rdo"


def test_targets_are_cached_per_chat_format(toy, monkeypatch):
    from mechrefusal.models.chat import ChatFormat
    from mechrefusal.train.targets import _cache_key

    key = _cache_key(toy, ["How do magnets work?"], 6, "float32", 0, "substring")
    monkeypatch.setattr(toy, "chat", ChatFormat(toy.tokenizer, system="Answer in one word."))
    assert _cache_key(toy, ["How do magnets work?"], 6, "float32", 0, "substring") != key
