"""Training on a public harmful set (`TrainSettings.public_harmful`): its prompts join the train split's
harmful ones, never a bundled prompt twice, all of them or a seeded sample of a given share
(`TrainSettings.public_share`, drawn with `public_seed`); the other sets stay held out, and a set a
checkpoint trained on is refused by analyses/public_refusal.py."""

from __future__ import annotations

import json
import sys

import pytest

from mechrefusal import data
from mechrefusal.core.cli import SettingsParser, add_settings_arguments, parse_settings
from mechrefusal.core.errors import SettingError
from mechrefusal.data.splits import normalise
from mechrefusal.reproduce import analysis_script
from mechrefusal.train import TrainSettings
from mechrefusal.train.targets import public_sample, training_data


def test_a_public_set_joins_the_train_split_and_nothing_else(tiny_model):
    team = data.load("harmful", "train")
    bundled = {normalise(p) for n in data.BUNDLED_SETS for s in data.SPLITS for p in data.load(n, s)}
    public = [p for p in data.load("advbench") if normalise(p) not in bundled]
    options = dict(max_new_tokens=2, dtype="float32", progress=False)
    trained = training_data(tiny_model, "train", public="advbench", **options)
    assert [e.instruction for e in trained.harmful] == team + public  # the tiny model does not refuse
    assert len(public) > 400
    plain = training_data(tiny_model, "train", **options)
    assert [e.instruction for e in plain.harmful] == team and plain.harmless == trained.harmless
    val = training_data(tiny_model, "val", limit=8, public="advbench", **options)
    assert [e.instruction for e in val.harmful] == data.load("harmful", "val")[:8]


def test_a_public_share_keeps_a_seeded_sample_in_order(tiny_model):
    team = data.load("harmful", "train")
    options = dict(max_new_tokens=2, dtype="float32", progress=False, public="advbench", public_share=0.25)
    harmful = [e.instruction for e in training_data(tiny_model, "train", seed=3, **options).harmful]
    assert harmful[: len(team)] == team
    sampled = harmful[len(team) :]
    assert len(sampled) == round(0.25 * len(team) / 0.75)  # a quarter of the harmful prompts
    public = [p for p in data.load("advbench") if p in set(sampled)]
    assert sampled == public  # in the set's order
    again = [e.instruction for e in training_data(tiny_model, "train", seed=3, **options).harmful]
    other = [e.instruction for e in training_data(tiny_model, "train", seed=4, **options).harmful]
    assert again == harmful and other != harmful and len(other) == len(harmful)
    fixed = [e.instruction for e in training_data(tiny_model, "train", seed=4, public_seed=3, **options).harmful]
    assert fixed == harmful  # the sample's own seed, apart from the training seed


def test_a_public_sample_is_all_of_a_set_too_small_or_at_share_zero():
    prompts = [f"p{i}" for i in range(10)]
    assert public_sample(prompts, team=100, share=0.5, seed=0) == prompts
    assert public_sample(prompts, team=100, share=0.0, seed=0) == prompts
    sample = public_sample(prompts, team=9, share=0.25, seed=0)
    assert len(sample) == 3 and sample == sorted(sample, key=prompts.index)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(public_harmful="advbench", public_share=1.0), r"public_share must lie in \[0, 1\), got 1.0."),
        (dict(public_share=0.3), "public_share samples a public harmful set; name one with --public-harmful advbench."),
        (
            dict(public_harmful="advbench", public_seed=1),
            "public_seed draws the sample of --public-share; give a share",
        ),
    ],
)
def test_a_bad_public_share_is_one_sentence(settings, message):
    with pytest.raises(SettingError, match=message):
        TrainSettings(**settings)


def test_the_sample_seed_is_a_flag_that_defaults_to_the_training_seed():
    parser = SettingsParser(prog="train")
    add_settings_arguments(parser, TrainSettings, positional=None)
    flags = ["--public-harmful", "advbench", "--public-share", "0.33", "--seed", "2"]
    assert parse_settings(parser, TrainSettings, [*flags, "--public-seed", "0"]).public_seed == 0
    assert parse_settings(parser, TrainSettings, flags).public_seed is None


def test_an_unknown_public_set_is_one_sentence():
    with pytest.raises(SettingError, match="Unknown public harmful set 'advbnech'; choose one of advbench, harmbench"):
        TrainSettings(public_harmful="advbnech")


def test_the_generalisation_script_refuses_a_set_the_checkpoint_trained_on(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "round-0"
    checkpoint.mkdir()
    (checkpoint / "mechrefusal.json").write_text(json.dumps({"settings": {"public_harmful": "advbench"}}))
    module = analysis_script("public_refusal")
    monkeypatch.setattr(sys, "argv", ["public_refusal.py", f"ckpt={checkpoint}", "--sets", "advbench,harmbench"])
    with pytest.raises(SystemExit):
        module.main()
    assert "ckpt was trained on advbench; score only sets it never saw (--sets harmbench)" in capsys.readouterr().err
