"""The analysis job on the toy refusing model: report contents, page == JSON, CLI, Jupyter."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import torch

import mechrefusal
from mechrefusal.analysis.report import FIGURES, PNG_HINT, SUMMARY_FIELDS, ModelResult, Report, lookup
from mechrefusal.analyze import AnalyzeSettings, fresh_filters, main
from mechrefusal.core.cli import read_settings_file, settings_from_dict
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.directions import SelectionFilters
from tests.conftest import TOY_ANALYSIS


class PageNumbers(HTMLParser):
    """Collects the page's ``data-key``/``data-value`` cells and its figure specs."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, object] = {}
        self.figures: dict[str, dict] = {}
        self._target = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-key" in attrs:
            self.cells[attrs["data-key"]] = json.loads(attrs["data-value"])
        if tag == "script" and attrs.get("class") == "figure-spec":
            self._target = attrs["data-target"]

    def handle_data(self, data):
        if self._target:
            self.figures[self._target] = json.loads(data)
            self._target = None


def page_numbers(html: str) -> PageNumbers:
    parser = PageNumbers()
    parser.feed(html)
    return parser


def test_saved_toy_reloads_with_the_same_logits(toy, toy_dir):
    reloaded = mechrefusal.load(toy_dir, device="cpu")
    batch = toy.tokenize(["Hi", "How do I pick a lock?"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.logits(batch), toy.logits(batch))


def test_checkpoint_directions_and_a_fresh_one_are_analysed(toy_report):
    model, compare = toy_report.models
    assert (model.role, compare.role) == ("model", "compare")
    assert [(d.label, d.source, d.method) for d in model.directions] == [
        ("d0", "saved", "random"),
        ("fresh", "fresh", "dim"),
    ]
    assert [d.source for d in compare.directions] == ["fresh"]
    for summary in (model.summary, compare.summary):
        assert summary.harmful_refusal > 0.6 and summary.directions_to_break == 1
        assert summary.breaking_set == ("fresh",) and summary.fail_closed is False
        assert summary.harmless_refusal < 0.4
        # the selected direction ablated: harmful scores fall far, harmless ones stay below harmful ones
        assert summary.harmful_all_ablated_score < summary.harmful_score - 3
        assert summary.harmless_all_ablated_score < summary.harmful_score
    assert model.directions[0].single_refusal > 0.5  # the random saved direction leaves refusal
    saved = mechrefusal.DirectionSet.load(toy_report.out / "model_directions.safetensors")
    assert [d.method for d in saved] == ["random", "dim"]


def test_the_fresh_direction_is_searched_as_loosely_as_the_saved_ones_were(toy_report):
    saved = [
        Direction(torch.ones(4), 1, -1, "dim", {"filters": {"max_kl": 0.3, "min_induce": 0.0}}),
        Direction(torch.ones(4), 2, -1, "dim", {"filters": {"max_kl": 0.6, "min_induce": -10.0}}),
    ]
    assert fresh_filters(DirectionSet(saved), AnalyzeSettings()) == SelectionFilters(max_kl=0.6, min_induce=-10.0)
    named = AnalyzeSettings(max_kl=0.05)
    assert fresh_filters(DirectionSet(saved), named) == SelectionFilters(max_kl=0.05, min_induce=-10.0)
    assert fresh_filters(None, AnalyzeSettings()) == SelectionFilters()  # nothing recorded: the defaults
    recorded = json.loads((toy_report.out / "report.json").read_text())["models"][0]["fresh_selection"]["filters"]
    assert recorded["max_kl"] == TOY_ANALYSIS["max_kl"] and recorded["min_induce"] == 0.0


def test_numbers_in_the_json_equal_those_in_the_page(toy_report):
    data = json.loads((toy_report.out / "report.json").read_text())
    assert data == toy_report.data
    page = page_numbers((toy_report.out / "report.html").read_text())
    assert len(page.cells) > 20
    for key, value in page.cells.items():
        assert lookup(data, key) == value, key
    assert len(page.figures) == 2 * len(FIGURES)
    for index, entry in enumerate(data["models"]):
        independence = entry["independence"]
        assert page.figures[f"report-{index}-cosines"]["data"][0]["z"] == independence["cosines"]
        assert page.figures[f"report-{index}-pair_ablation"]["data"][0]["z"] == independence["pair_scores"]
        assert page.figures[f"report-{index}-shifts"]["data"][0]["z"] == independence["shifts"]
        assert page.figures[f"report-{index}-single_ablation"]["data"][0]["y"] == [
            independence["baseline_rate"],
            *independence["single_rates"],
            independence["all_rate"],
        ]


def test_typed_views_read_the_same_numbers_as_the_json(toy_report):
    data = json.loads((toy_report.out / "report.json").read_text())
    views = Report.load(toy_report.out).models
    assert views == toy_report.models and len(views) == len(data["models"]) == 2
    for view, entry in zip(views, data["models"]):
        assert (view.role, view.model, view.entry) == (entry["role"], entry["model"], entry)
        for name, path in SUMMARY_FIELDS.items():
            value = getattr(view.summary, name)
            assert (list(value) if isinstance(value, tuple) else value) == lookup(entry, path), name
        assert [(d.label, d.layer, d.position, d.norm, d.passed_filters) for d in view.directions] == [
            (d["label"], d["layer"], d["position"], d["norm"], d["passed_filters"]) for d in entry["directions"]
        ]
        assert [d.single_refusal for d in view.directions] == entry["independence"]["single_rates"]
        assert [d.induce_score for d in view.directions] == entry["independence"]["induce_scores"]
    older = json.loads(json.dumps(data["models"][0]))
    for direction in older["directions"]:
        del direction["passed_filters"]  # reports written before the field existed still read
    assert {d.passed_filters for d in ModelResult.from_entry(older).directions} == {None}


def test_report_and_its_views_print_one_line_with_the_headline_numbers(toy_report):
    model = toy_report.models[0]
    for text in (repr(toy_report), repr(model), repr(model.summary), repr(model.directions[0])):
        assert "\n" not in text and len(text) < 200, text
    rate = f"{model.summary.harmful_refusal:.1%}"
    assert rate in repr(toy_report) and rate in repr(model) and rate in repr(model.summary)
    assert f"fail_closed={model.summary.fail_closed}" in repr(toy_report)


def test_page_is_self_contained(toy_report):
    page = (toy_report.out / "report.html").read_text()
    assert "http://" not in page.split("<body>")[1] and "<script src" not in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js is inlined


def test_png_figures_are_written(toy_report):
    assert toy_report.notes == []
    for index in range(2):
        for key in FIGURES:
            assert (toy_report.out / "figures" / f"{index}-{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_chromium_the_page_is_written_and_the_note_says_how_to_get_pngs(toy_report, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    report = Report.load(toy_report.out)
    report.save(tmp_path / "copy")
    assert report.notes == [PNG_HINT] and "apt-get install chromium" in PNG_HINT
    assert (tmp_path / "copy" / "report.html").exists() and not (tmp_path / "copy" / "figures").exists()


def test_a_hanging_png_export_is_cut_short(toy_report, tmp_path, monkeypatch):
    monkeypatch.setattr("mechrefusal.analysis.report.PNG_TIMEOUT_S", 0.5)
    report = Report.load(toy_report.out)
    report.save(tmp_path / "copy")
    assert report.notes == ["PNG figures skipped: kaleido did not finish in 0.5 s; report.html has every figure."]
    assert (tmp_path / "copy" / "report.html").exists()


def test_repr_html_shows_the_summary_and_the_figures(toy_report):
    fragment = toy_report._repr_html_()
    assert "<html" not in fragment and "Plotly.newPlot" in fragment
    numbers = page_numbers(fragment)
    assert numbers.cells["models.0.independence.summary.directions_to_break"] == 1
    assert len(numbers.figures) == 2 * len(FIGURES)
    assert "directions to break refusal" in fragment and "fail-closed" in fragment
    other = page_numbers(toy_report._repr_html_())
    assert not set(other.figures) & set(numbers.figures)  # two outputs in one notebook do not clash


def test_text_summary_has_both_models(toy_report):
    text = toy_report.summary()
    assert "model" in text.splitlines()[0] and "compare" in text.splitlines()[0]
    assert "d0 (saved random" in text and "fresh (fresh dim" in text


def test_analyze_is_a_callable_module():
    import mechrefusal.analyze as module

    assert mechrefusal.analyze is module and callable(mechrefusal.analyze)
    assert module.AnalyzeSettings().finder == "dim"


def test_cli_runs_as_a_module_without_import_warnings():
    result = subprocess.run([sys.executable, "-m", "mechrefusal.analyze", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--compare" in result.stdout and "--finder" in result.stdout
    assert "RuntimeWarning" not in result.stderr


def test_cli_writes_the_report(toy_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))  # PNGs: test_png_figures_are_written
    out = tmp_path / "cli"
    main(
        [
            str(toy_dir),
            "--out",
            str(out),
            "--n-train",
            "32",
            "--n-val",
            "8",
            "--n-test",
            "8",
            "--max-new-tokens",
            "4",
            "--max-kl",
            "1.0",
            "--dtype",
            "float32",
        ]
    )
    printed = capsys.readouterr().out
    assert "directions to break refusal" in printed and str(out / "report.html") in printed
    assert (
        "mean refusal score, harmful, all ablated" in printed and "mean refusal score, harmless, all ablated" in printed
    )
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["n_test"] == 8 and settings["dtype"] == "float32" and settings["finder"] == "dim"
    replayed = settings_from_dict(AnalyzeSettings, read_settings_file(out / "settings.toml", AnalyzeSettings))
    assert replayed == settings_from_dict(AnalyzeSettings, settings) and replayed.model == str(toy_dir)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--directions", "missing.safetensors"], "No direction file at missing.safetensors"),
        (["--finder", "nope"], "Unknown direction finder 'nope'; choose one of dim, rdo"),
        (["--n-test", "1"], "n_test must be at least 2"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_errors_are_one_clear_line(toy_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                str(toy_dir),
                "--out",
                str(tmp_path / "r"),
                *[f"--{key.replace('_', '-')}={value}" for key, value in TOY_ANALYSIS.items()],
                *flags,
            ]
        )
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_missing_model_and_a_file_as_out(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert "the path does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "file")])
    assert "is a file; pass a directory" in capsys.readouterr().err


def test_a_non_finite_kl_reads_as_a_dash_in_the_page(toy_report):
    data = copy.deepcopy(toy_report.data)
    data["models"][0]["harmless"]["kl_all_ablated"] = float("nan")  # stored as null (strict JSON)
    page = Report(data).html()  # before: TypeError from the KL cell's format, after report.json was written
    row = page[page.index("first-token KL on harmless, all ablated") :]
    assert "–" in row[: row.index("</tr>")]  # the KL row's own cell
