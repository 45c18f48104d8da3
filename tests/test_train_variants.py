"""The fail-closed variants against the re-search attack (issue 14, item 3) on the toy: the unconditioned
direction, random-subspace ablation, latent adversarial training; their settings, flags and records."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Direction, DirectionSet
from mechrefusal.core.cli import (
    SettingsParser,
    add_settings_arguments,
    parse_settings,
    read_settings_file,
    settings_from_dict,
)
from mechrefusal.core.errors import CheckpointError
from mechrefusal.interventions import per_row
from mechrefusal.train import TrainSettings, run
from mechrefusal.train import job as train_job
from mechrefusal.train.adversary import LatentAdversary, ResidualShift
from mechrefusal.train.loop import _grouped, _loss_terms, split_rows
from mechrefusal.train.methods.fail_closed import FailClosed
from mechrefusal.train.refresh import RefreshPlan
from mechrefusal.train.settings import AFTER_ROUND_ZERO, EXECUTION, LatentTrainingSettings
from mechrefusal.train.subspace import SubspacePlan
from mechrefusal.train.targets import training_data
from tests.test_train import toy_settings

VARIANT_FLAGS = [
    "--fresh-unconditioned",
    "--fresh-max-cosine",
    "0.8",
    "--subspace-share",
    "0.5",
    "--subspace-fresh",
    "2",
    "--latent-epsilon",
    "0.1",
    "--latent-steps",
    "3",
    "--latent-objective",
    "refusal",
    "--rounds",
    "6",
]


def test_variant_flags_reach_the_settings_and_nothing_caps_the_rounds():
    parser = SettingsParser(prog="train")
    add_settings_arguments(parser, TrainSettings, positional=None)
    settings = parse_settings(parser, TrainSettings, ["--method", "fail-closed", *VARIANT_FLAGS])
    assert settings.fresh_unconditioned and settings.fresh_max_cosine == 0.8
    assert (settings.subspace_share, settings.subspace_fresh) == (0.5, 2)
    assert settings.latent == LatentTrainingSettings(epsilon=0.1, steps=3, objective="refusal")
    assert FailClosed(settings).last_round() == 6
    defaults = TrainSettings()  # off by default: the published method
    assert not defaults.fresh_unconditioned and defaults.subspace_share == 0 and defaults.latent.epsilon == 0
    assert {"fresh_unconditioned", "subspace_share", "subspace_fresh", "latent"} <= set(AFTER_ROUND_ZERO)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LatentTrainingSettings(epsilon=-0.1), r"latent epsilon must be positive \(or 0: off\), got -0.1"),
        (lambda: LatentTrainingSettings(epsilon=0.1, steps=0), "latent steps must be at least 1"),
        (lambda: LatentTrainingSettings(step_size=0.0), "step_size positive"),
        (lambda: LatentTrainingSettings(layers="2,x"), "comma-separated block indices"),
        (lambda: LatentTrainingSettings(objective="harm"), "Unknown latent objective 'harm'"),
        (lambda: TrainSettings(subspace_share=1.5), r"subspace_share must lie in \[0, 1\]"),
        (lambda: TrainSettings(fresh_max_cosine=0.0), r"fresh_max_cosine lie in \(0, 1\]"),
        (lambda: TrainSettings(subspace_fresh=2), "set subspace_share above 0 too"),
        (lambda: TrainSettings(method="refat", fresh_unconditioned=True), "are fail-closed settings; method 'refat'"),
    ],
)
def test_bad_variant_settings_are_one_sentence(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def directions_of(width: int, k: int, seed: int = 0) -> DirectionSet:
    vectors = torch.randn(k, width, generator=torch.Generator().manual_seed(seed))
    return DirectionSet([Direction(5 * v, 1, -1, "t") for v in vectors])


def residual_off(span: DirectionSet, vector: torch.Tensor) -> float:
    """The norm of what is left of ``vector`` once projected onto the span."""
    q = span.basis()
    return float((vector - q @ (q.T @ vector)).norm())


def test_the_subspace_plan_ablates_random_unit_vectors_inside_the_span():
    directions, fresh = directions_of(64, 3), list(directions_of(64, 1, seed=1))
    generator = torch.Generator().manual_seed(0)
    plan = SubspacePlan(directions, fresh, share=1.0, plain_share=0.0, generator=generator)
    sizes, off_found = set(), 0
    for step in range(40):
        (whole, full), (plain, _), *subspaces = plan(step, 4)
        assert whole == [] and plain == [] and [rows for rows, _ in subspaces] == [[0], [1], [2], [3]]
        for _, ablation in subspaces:
            vectors = ablation.directions.matrix
            sizes.add(len(vectors))
            torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(vectors)))
            assert all(residual_off(DirectionSet([*directions, *fresh]), v) < 1e-4 for v in vectors)
            off_found += any(residual_off(directions, v) > 0.1 for v in vectors)  # the fresh candidate's share
    assert sizes == {1, 2, 3, 4} and off_found > 20
    assert isinstance(full, Ablate) and full.directions is directions  # the rest: the whole span, as published

    mixed = SubspacePlan(directions, [], share=0.5, plain_share=0.25, generator=generator)
    counts = torch.zeros(3)
    for step in range(300):
        (whole, _), (plain, _), *subspaces = mixed(step, 8)
        counts += torch.tensor([len(whole), len(plain), len(subspaces)])
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.375, 0.25, 0.375]), atol=0.03, rtol=0)


def test_fail_closed_plans_subspaces_only_when_asked(tiny_model):
    directions = directions_of(tiny_model.d_model, 2)
    generator = torch.Generator().manual_seed(0)
    plan = FailClosed(TrainSettings(subspace_share=1.0)).safety_plan(
        tiny_model, directions, round_index=1, generator=generator
    )
    assert isinstance(plan, SubspacePlan)
    published = FailClosed(TrainSettings()).safety_plan(tiny_model, directions, round_index=1, generator=generator)
    assert not isinstance(published, SubspacePlan)


def test_the_unconditioned_search_ablates_nothing_and_skips_a_parallel_direction(tiny_model, monkeypatch):
    saved = directions_of(tiny_model.d_model, 2)
    searched_under = []

    def search_returning(vector):
        def search(model, directions, settings, **kwargs):
            searched_under.append(len(directions))
            return Direction(vector, 2, -1, "dim", {"bypass": -1.0, "induce": 1.0, "kl": 0.1, "passed_filters": True})

        return search

    settings = TrainSettings(fresh_unconditioned=True, fresh_max_cosine=0.9)
    monkeypatch.setattr(train_job, "trainer_search", search_returning(-3 * saved[1].vector))
    added, summary = train_job._unconditioned(tiny_model, saved, settings, progress=False)
    assert added is None and not summary["added"] and summary["max_cosine"] == pytest.approx(1.0)
    assert len(saved) == 2 and searched_under == [0]  # nothing ablated in the search

    fresh = torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(train_job, "trainer_search", search_returning(fresh))
    added, summary = train_job._unconditioned(tiny_model, saved, settings, progress=False)
    assert summary["added"] and summary["max_cosine"] < 0.9 and summary["layer"] == 2
    assert len(saved) == 3 and saved[2] is added and added.provenance["unconditioned"]


@pytest.fixture(scope="module")
def examples(toy):
    found = training_data(toy, "train", limit=8, max_new_tokens=6, dtype="float32", progress=False)
    return found.harmful[:4], found.harmless[:4]


def block_input_norms(model, batch, layer: int) -> torch.Tensor:
    seen = {}
    with (
        torch.no_grad(),
        model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_in", lambda a, hook: seen.setdefault(0, a))]),
    ):
        model.logits(batch)
    return seen[0].norm(dim=-1)


@pytest.mark.parametrize("objective", ["refusal", "compliance"])
def test_the_latent_perturbation_stays_within_epsilon_and_raises_the_safety_loss(toy, toy_dir, examples, objective):
    harmful, harmless = examples
    settings = toy_settings(toy_dir, "unused", latent=LatentTrainingSettings(epsilon=0.5, objective=objective))
    adversary = LatentAdversary(settings.latent, (1,))
    groups = [([0, 1, 2, 3], None)]
    batch, groups = _grouped(toy, harmful, groups)
    interventions = per_row(groups)
    trainable = [parameter.requires_grad for parameter in toy.hf_model.parameters()]  # the session's toy, as found
    for parameter in toy.hf_model.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None  # the toy's own training left its last gradients
    try:
        shift = adversary(toy, [e.instruction for e in harmful], batch, interventions)
        assert all(parameter.grad is None for parameter in toy.hf_model.parameters())  # the weights get nothing
        with torch.no_grad():
            plain, _ = _loss_terms(toy, toy, harmful, harmless, settings, groups)
            attacked, _ = _loss_terms(toy, toy, harmful, harmless, settings, groups, adversary=adversary)
    finally:
        for parameter, was in zip(toy.hf_model.parameters(), trainable):
            parameter.requires_grad_(was)
    assert isinstance(shift, ResidualShift) and shift.layers == (1,)
    norms = block_input_norms(toy, batch, 1)
    lengths = batch.reply_mask.int().argmax(dim=1)
    for row, n in enumerate(lengths.tolist()):
        radius = 0.5 * norms[row, :n].median()
        token_norms = shift.deltas[0, row].norm(dim=-1)
        assert token_norms.max() <= radius * (1 + 1e-4) and token_norms[:n].max() > 0.5 * radius
        assert not shift.mask[row, n:].any()  # nothing added past the prompt
    # the safety loss rises under the perturbation: directly with the refusal objective, by the way of the
    # "Sure, here is" target with the compliance one
    assert attacked.mean() > plain.mean() + (0.1 if objective == "refusal" else 0.005)
    before, after = adversary.log[0]
    assert (after > before) if objective == "refusal" else (after < before)


def test_residual_shift_layers_are_checked(toy):
    shift = ResidualShift((9,), torch.zeros(1, 1, 2, toy.d_model), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"Latent layers \[9\] are outside this model's blocks 0..3"):
        shift.hooks(toy)


def test_a_round_with_every_variant_records_them_and_keeps_round_zero_shareable(toy_dir, tmp_path):
    latent = LatentTrainingSettings(epsilon=0.2, steps=2, layers="1")
    settings = toy_settings(
        toy_dir,
        tmp_path / "run",
        finder="dim",
        steps=2,
        fresh_unconditioned=True,
        fresh_max_cosine=1.0,
        subspace_share=0.5,
        subspace_fresh=1,
        latent=latent,
    )
    written = run(settings, progress=False)
    assert [path.name for path in written] == ["round-0", "round-1"]
    zero, one = (json.loads((path / "mechrefusal.json").read_text()) for path in written)
    assert "latent" not in zero["metrics"] and "unconditioned_search" not in zero["metrics"]  # round 0 as published
    record = one["metrics"]["unconditioned_search"]
    assert {"layer", "bypass", "kl", "max_cosine", "added"} <= set(record) and one["metrics"]["search"] is not None
    assert one["metrics"]["latent"]["micro_batches"] == 2 and one["metrics"]["latent"]["layers"] == [1]
    saved = mechrefusal.load(written[1], device="cpu").directions
    assert saved is not None
    assert record["added"] and saved[-1].provenance["unconditioned"]  # fresh_max_cosine 1: it joins the set
    assert len(saved) == 2 + one["metrics"]["direction_found"]
    replayed = read_settings_file(written[1] / "settings.toml", TrainSettings)  # the run's TOML replays it
    assert settings_from_dict(TrainSettings, replayed) == settings
    published = asdict(toy_settings(toy_dir, settings.out, finder="dim", steps=2))  # a round 0 to start from
    assert train_job._changed(published, settings, ignore=AFTER_ROUND_ZERO + EXECUTION) == []
    older = {key: value for key, value in one["settings"].items() if key not in ("latent", "subspace_share")}
    assert train_job._changed(older, settings, ignore=("resume",)) == [
        "latent.epsilon",
        "latent.layers",
        "latent.steps",
        "subspace_share",
    ]


def test_the_cosine_figure_labels_the_unconditioned_directions():
    from mechrefusal.analysis.paper.mechanisms import direction_cosines

    rounds = [
        {"round": 0, "metrics": {"direction_found": True}},
        {"round": 1, "metrics": {"direction_found": True, "unconditioned_search": {"added": True}}},
        {"round": 2, "metrics": {"direction_found": False, "unconditioned_search": {"added": False}}},
    ]
    heat = direction_cosines(directions_of(8, 3), rounds).figure.data[0]
    assert list(heat.x) == ["d0 (round 0)", "d1 (round 1)", "d2 (round 1, unconditioned)"]


def test_fresh_candidates_are_the_best_passing_cells_of_a_search_with_nothing_ablated(toy, toy_dir):
    from mechrefusal.directions import DIMSettings
    from mechrefusal.train.search import fresh_candidates, trainer_search

    settings = toy_settings(toy_dir, "unused", finder="dim", dim=DIMSettings(search="exact"))  # all scored
    chosen = trainer_search(toy, DirectionSet(), settings, progress=False)
    candidates = fresh_candidates(toy, 3, settings, progress=False)
    assert len(candidates) == 3 and candidates[0].provenance["bypass"] < 0  # the best mediates refusal
    best = candidates[0]
    assert (best.layer, best.position) == (chosen.layer, chosen.position)
    torch.testing.assert_close(best.vector, chosen.vector)
    assert [c.provenance["bypass"] for c in candidates] == sorted(c.provenance["bypass"] for c in candidates)
    assert len({(c.layer, c.position) for c in candidates}) == len(candidates)


def test_split_rows_partitions_each_step_by_two_draws_per_example():
    counts = torch.zeros(3)
    for seed in range(200):
        plain, chosen, rest = split_rows(8, 0.25, 0.5, torch.Generator().manual_seed(seed))
        assert sorted(plain + chosen + rest) == list(range(8))
        counts += torch.tensor([len(plain), len(chosen), len(rest)], dtype=torch.float)
        # the plain rows do not depend on the share: a plan that turns its share off draws the same rows
        unshared = split_rows(8, 0.25, 0.0, torch.Generator().manual_seed(seed))
        assert unshared == (plain, [], sorted(chosen + rest))
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.25, 0.375, 0.375]), atol=0.03, rtol=0)


def found_direction(vector: torch.Tensor, passed: bool) -> Direction:
    scores = {"bypass": -1.0, "induce": 1.0, "kl": 0.1, "passed_filters": passed}
    return Direction(vector, 2, -1, "dim", scores)


def test_the_refresh_plan_ablates_the_latest_passing_search_with_the_saved_directions(tiny_model):
    saved = directions_of(tiny_model.d_model, 2)
    vectors = torch.randn(3, tiny_model.d_model, generator=torch.Generator().manual_seed(3))
    results = iter(
        [found_direction(vectors[0], False), found_direction(vectors[1], True), found_direction(vectors[2], False)]
    )
    modes = []

    def search(model):
        modes.append(model.hf_model.training)
        return next(results)

    tiny_model.hf_model.train()
    plan = RefreshPlan(
        tiny_model, saved, search, every=3, share=1.0, plain_share=0.0, generator=torch.Generator().manual_seed(0)
    )
    (kept, only_saved), (plain, _), (fresh, _) = plan(1, 4)  # the first search fails: no fresh direction yet
    assert kept == [0, 1, 2, 3] and plain == [] and fresh == [] and only_saved.directions is saved
    assert plan(3, 4)[2][0] == []  # not searched again before `every` steps
    (kept, _), _, (fresh, with_fresh) = plan(4, 4)  # the second passes: saved + fresh on every ablated example
    assert kept == [] and fresh == [0, 1, 2, 3]
    torch.testing.assert_close(with_fresh.directions.matrix, torch.cat([saved.matrix, vectors[1:2]]))
    _, _, (fresh, kept_fresh) = plan(7, 4)  # the third fails: the second's direction stays
    assert fresh == [0, 1, 2, 3] and kept_fresh is with_fresh
    assert [record["step"] for record in plan.found] == [1, 4, 7]
    assert [record["passed_filters"] for record in plan.found] == [False, True, False]
    assert plan.found[1] == {  # the same summary as a round's own search
        "step": 4,
        "layer": 2,
        "position": -1,
        "method": "dim",
        "bypass": -1.0,
        "induce": 1.0,
        "kl": 0.1,
        "passed_filters": True,
    }
    assert modes == [False, False, False] and tiny_model.hf_model.training  # searched in eval mode, restored
    tiny_model.hf_model.eval()
    assert len(saved) == 2  # the saved set itself is not grown

    mixed = RefreshPlan(
        tiny_model,
        saved,
        lambda model: found_direction(vectors[1], True),
        every=100,
        share=0.5,
        plain_share=0.25,
        generator=torch.Generator().manual_seed(1),
    )
    counts = torch.zeros(3)
    for step in range(1, 301):
        counts += torch.tensor([len(rows) for rows, _ in mixed(step, 8)], dtype=torch.float)
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.375, 0.25, 0.375]), atol=0.03, rtol=0)
    tiny_model.hf_model.eval()


def test_fail_closed_refreshes_only_when_asked_and_the_settings_say_what_is_wrong(tiny_model):
    directions = directions_of(tiny_model.d_model, 2)
    generator = torch.Generator().manual_seed(0)
    settings = TrainSettings(refresh_every=8, refresh_share=0.3)
    plan = FailClosed(settings).safety_plan(tiny_model, directions, round_index=1, generator=generator)
    assert isinstance(plan, RefreshPlan) and (plan.every, plan.share) == (8, 0.3)
    assert not isinstance(
        FailClosed(TrainSettings()).safety_plan(tiny_model, directions, round_index=1, generator=generator), RefreshPlan
    )
    parser = SettingsParser(prog="train")
    add_settings_arguments(parser, TrainSettings, positional=None)
    parsed = parse_settings(parser, TrainSettings, ["--refresh-every", "8", "--refresh-share", "0.3"])
    assert (parsed.refresh_every, parsed.refresh_share) == (8, 0.3) and TrainSettings().refresh_every == 0
    assert {"refresh_every", "refresh_share"} <= set(AFTER_ROUND_ZERO)
    for make, message in [
        (lambda: TrainSettings(refresh_every=-1), r"refresh_every must be 0 \(off\) or a number of steps"),
        (lambda: TrainSettings(refresh_every=4, refresh_share=1.5), r"refresh_share lie in \[0, 1\]; got 4 and 1.5"),
        (lambda: TrainSettings(refresh_every=4, subspace_share=0.5), "two plans for the ablated examples; set one"),
        (
            lambda: TrainSettings(method="refat", refresh_every=4),
            "refresh_every and consolidation_rounds are fail-closed",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            make()


def test_a_refreshing_round_records_each_search(toy_dir, tmp_path):
    settings = toy_settings(toy_dir, tmp_path / "run", finder="dim", steps=3, refresh_every=2)
    written = run(settings, progress=False)
    zero, one = (json.loads((path / "mechrefusal.json").read_text()) for path in written)
    assert "refresh" not in zero["metrics"]  # round 0 as published
    record = one["metrics"]["refresh"]
    assert [entry["step"] for entry in record] == [1, 3]
    assert all({"layer", "position", "bypass", "kl", "passed_filters"} <= set(entry) for entry in record)


def test_consolidation_rounds_search_nothing_and_do_not_stop_the_run():
    method = FailClosed(TrainSettings(rounds=3, consolidation_rounds=1))
    assert [method.searches_after(index) for index in (1, 2, 3)] == [True, True, False]
    assert method.stops_after(2, None) and not method.stops_after(3, None)  # round 3 looked for nothing: goes on
    assert TrainSettings().consolidation_rounds == 0 and "consolidation_rounds" in AFTER_ROUND_ZERO
    for make, message in [
        (lambda: TrainSettings(rounds=3, consolidation_rounds=4), r"between 0 and rounds \(3\), got 4"),
        (lambda: TrainSettings(consolidation_rounds=-1), r"between 0 and rounds \(3\), got -1"),
        (lambda: TrainSettings(method="refat", consolidation_rounds=1), "consolidation_rounds are fail-closed"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()


def test_a_consolidation_round_trains_the_saved_directions_and_resumes_only_where_it_fits(toy_dir, tmp_path):
    searched = toy_settings(toy_dir, tmp_path / "searched", finder="dim", steps=2, fresh_unconditioned=True)
    searched = replace(searched, fresh_max_cosine=1.0)  # the unconditioned direction always joins: no early stop
    run(searched, progress=False)
    extended = tmp_path / "extended"
    shutil.copytree(searched.out, extended)
    settings = replace(searched, out=str(extended), rounds=2, consolidation_rounds=1, resume=True)
    assert [path.name for path in run(settings, progress=False)] == ["round-2"]
    last, before = (json.loads((extended / name / "mechrefusal.json").read_text()) for name in ("round-2", "round-1"))
    assert last["metrics"]["search"] is None and "unconditioned_search" not in last["metrics"]
    assert not last["metrics"]["direction_found"] and before["metrics"]["search"] is not None
    kept, trained = (mechrefusal.load(extended / name, device="cpu").directions for name in ("round-1", "round-2"))
    assert kept is not None and trained is not None and len(trained) == len(kept) >= 2
    assert all(torch.equal(new.vector, old.vector) for new, old in zip(trained, kept))
    weights = [(extended / name / "model.safetensors").read_bytes() for name in ("round-1", "round-2")]
    assert weights[0] != weights[1]  # the round trained against them
    with pytest.raises(CheckpointError, match=r"its round 2 did not search for a new direction, which --rounds 3"):
        run(replace(settings, rounds=3), progress=False)  # round 2 would then have searched
    with pytest.raises(CheckpointError, match=r"its round 1 searched for a new direction, which --rounds 2 with --"):
        run(replace(searched, resume=True, rounds=2, consolidation_rounds=2), progress=False)
