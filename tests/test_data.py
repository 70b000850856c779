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


def test_load_tokenizer_skips_a_model_folder_saved_without_one(tmp_path, caplog):
    """transformers turns a folder without tokenizer files into an empty tokenizer (every word unknown);
    load_tokenizer takes the next source instead, or says what is missing."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    from hf_compress.data import has_tokenizer_files, load_tokenizer, minilm_path

    teacher = tmp_path / "teacher"
    config = BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(teacher)
    assert not has_tokenizer_files(teacher) and has_tokenizer_files(minilm_path())
    with caplog.at_level("WARNING"):
        tokenizer = load_tokenizer(teacher, minilm_path())
    assert "No tokenizer saved in" in caplog.text
    ids = tokenizer("a great movie")["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(tokenizer) > 1000  # the real vocabulary
    with pytest.raises(FileNotFoundError, match="tokenizer.save_pretrained"):
        load_tokenizer(teacher, None)
