"""Offline data loading: the real SST-2 copy, and clear errors for missing files and columns."""

import datasets
import pytest

from hf_compress.data import load_sst2, tokenize


def test_real_sst2_splits():
    train, dev, test = load_sst2("train"), load_sst2("dev"), load_sst2("test")
    assert (len(train), len(dev), len(test)) == (60614, 6735, 872)
    assert set(test["label"]) == {0, 1}
    assert 0.4 < sum(test["label"]) / len(test) < 0.6  # GLUE validation is roughly balanced
    assert test[0]["sentence"].startswith("it 's a charming")


def test_missing_data_dir_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_COMPRESS_DATA"):
        load_sst2("train", data_root=tmp_path)


def test_bad_split_and_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_sst2("validation")
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "test.tsv").write_text("sentence\tlabel\ngood movie\tpositive\n")
    with pytest.raises(ValueError, match="sentence<TAB>label"):
        load_sst2("test", data_root=tmp_path)


def test_tokenize_missing_column_is_explained():
    ds = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    with pytest.raises(ValueError, match="text_column"):
        tokenize(ds, tokenizer=None, text_column="sentence")
