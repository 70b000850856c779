"""Text-classification data for the CLI: the offline SST-2, local files, or a Hub dataset."""

from __future__ import annotations

import os

from .data import load_sst2, tokenize


def _rename(dataset, text_column: str, label_column: str, where: str):
    missing = [c for c in (text_column, label_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where}: column(s) {missing} not found (columns: {dataset.column_names}); "
            f"pass --text_column / --label_column."
        )
    dataset = dataset.select_columns([text_column, label_column])
    if text_column != "sentence":
        dataset = dataset.rename_column(text_column, "sentence")
    if label_column != "label":
        dataset = dataset.rename_column(label_column, "label")
    return dataset


def _load_file(path: str):
    import datasets

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        return datasets.load_dataset("csv", data_files=path, delimiter="\t" if ext == ".tsv" else ",", split="train")
    if ext in (".json", ".jsonl"):
        return datasets.load_dataset("json", data_files=path, split="train")
    raise ValueError(f"{path}: unsupported file type {ext!r}; use .csv, .tsv, .json or .jsonl.")


def load_text_classification(script, tokenizer):
    """(train, test, num_labels), tokenized; ``script`` carries dataset / columns / limits."""
    if script.dataset == "sst2":
        train, test = load_sst2("train"), load_sst2("test")
    elif os.path.splitext(script.dataset)[1]:
        if not script.eval_file:
            raise ValueError("A local training file needs --eval_file with the evaluation examples.")
        train = _rename(_load_file(script.dataset), script.text_column, script.label_column, script.dataset)
        test = _rename(_load_file(script.eval_file), script.text_column, script.label_column, script.eval_file)
    else:
        import datasets

        loaded = datasets.load_dataset(script.dataset)
        eval_split = "validation" if "validation" in loaded else "test"
        train = _rename(loaded["train"], script.text_column, script.label_column, script.dataset)
        test = _rename(loaded[eval_split], script.text_column, script.label_column, script.dataset)
    if script.train_limit:
        train = train.shuffle(seed=0).select(range(min(script.train_limit, len(train))))
    labels = sorted(set(train["label"]))
    if labels != list(range(len(labels))):
        raise ValueError(f"Labels must be integers 0..N-1; found {labels[:10]}.")
    train = tokenize(train, tokenizer, max_length=script.max_length)
    test = tokenize(test, tokenizer, max_length=script.max_length)
    return train, test, len(labels)
