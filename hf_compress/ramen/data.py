"""Data layer of RAMEN: extreme-classification (XC) splits, metadata graphs, and their file formats.

RAMEN trains a dual encoder that maps a short text to the relevant labels out of a very large label set; graph
metadata over the *training* points (citations, co-readership, hyperlinks, ...) is only used as a training
regularizer (each point's graph neighbours, the "anchors", act as extra positives). This module holds the data
containers (:class:`XCSplit`, :class:`MetadataGraph`, :class:`XCData`), readers and writers of the Extreme
Classification Repository format, and a builder of an XC task from the offline citeulike-a copy.

XC-repository folder layout (what :func:`load_xc_repository` reads and :func:`write_xc_repository` writes)::

    trn_X.txt              train point texts, one per line (line i = train point i)
    tst_X.txt              test point texts, one per line
    lbl_X.txt              label texts, one per line (line j = label j)
    trn_X_Y.txt            train label matrix [num_train x num_labels], sparse text format below
    tst_X_Y.txt            test label matrix  [num_test  x num_labels]
    filter_labels_test.txt optional: lines "test_row label_id" -- (point, label) pairs left out of evaluation
    trn_X_Z_<graph>.txt    optional metadata graph <graph>: [num_train x num_anchors] non-negative weights
    Z_<graph>.txt          anchor texts of graph <graph>, one per line (line a = anchor a)

Text files may also use the repository's raw ``id->text`` form (every line ``<id>-><text>``); the ids are then
dropped. Sparse matrix files have a header line ``"<rows> <cols>"`` followed by exactly ``rows`` lines, line
``i`` holding the non-zeros of row ``i`` as space-separated ``col:value`` tokens (an empty line is an empty row).

Malformed files raise :class:`XCFormatError`, whose message names the file, the line, what was expected and how
to fix it: in XC work a silent off-by-one between a text file and a matrix file mislabels every point after it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from hf_compress.data import data_dir

if TYPE_CHECKING:  # datasets is imported lazily: the readers do not need it
    import datasets

__all__ = [
    "XCFormatError",
    "XCMissingFileError",
    "XCSplit",
    "MetadataGraph",
    "XCData",
    "read_texts",
    "write_texts",
    "read_sparse_matrix",
    "write_sparse_matrix",
    "load_xc_repository",
    "write_xc_repository",
    "load_citeulike",
    "CITEULIKE_DIR",
]

PathLike = str | os.PathLike

CITEULIKE_DIR = "citeulike-a"
REQUIRED_XC_FILES = ("trn_X.txt", "tst_X.txt", "lbl_X.txt", "trn_X_Y.txt", "tst_X_Y.txt")
FILTER_FILE = "filter_labels_test.txt"
GRAPH_PREFIX = "trn_X_Z_"
ANCHOR_PREFIX = "Z_"
_GRAPH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class XCFormatError(ValueError):
    """A data file is malformed or missing; the message names the file, the line, what was expected, the fix."""


class XCMissingFileError(XCFormatError, FileNotFoundError):
    """A required data file is absent (also a ``FileNotFoundError``, so either ``except`` catches it)."""


def _where(path: PathLike, line: int | None = None) -> str:
    return f"{path}" + (f", line {line}" if line is not None else "")


# --------------------------------------------------------------------------------------------------- texts

# "<id>-><text>": the id is a run of non-blank characters that stops at the first "->".
_ID_PREFIX = re.compile(r"\S*?->")


def _split_lines(text: str) -> list[str]:
    """Lines of a file, where a final newline ends the last line rather than starting an empty one."""
    if text == "":
        return []
    lines = text.split("\n")  # not splitlines(): titles may hold \x1c, \u2028 ... which are not line ends here
    if text.endswith("\n"):
        lines.pop()
    return lines


def read_texts(path: PathLike) -> list[str]:
    """One text per line (line i = item i); the raw ``id->text`` form is accepted when *every* line has an id.

    Only the line end (``\\n`` or ``\\r\\n``) is removed, so texts round-trip exactly through :func:`write_texts`.
    """
    path = Path(path)
    if not path.is_file():
        raise XCMissingFileError(f"{path}: text file not found (expected one text per line).")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise XCFormatError(f"{path}: not valid UTF-8 ({error}); re-encode the file as UTF-8.") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in _split_lines(content)]
    if lines and all(_ID_PREFIX.match(line) for line in lines):
        lines = [line[_ID_PREFIX.match(line).end() :] for line in lines]
    return lines


def write_texts(path: PathLike, texts: Iterable[str]) -> None:
    """Write one text per line, newline-terminated.

    Texts holding a line break cannot be stored in this format and raise ``ValueError``. If every text happens to
    look like ``id->...``, the file is written as ``i->text`` so that :func:`read_texts` gives the texts back intact.
    """
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{path}: text {index} is a {type(text).__name__}, expected str.")
        if "\n" in text or "\r" in text:
            raise ValueError(f"{path}: text {index} contains a line break; one-text-per-line files cannot hold it "
                             f"(replace line breaks with spaces first): {text!r}")
    if texts and all(_ID_PREFIX.match(text) for text in texts):
        texts = [f"{index}->{text}" for index, text in enumerate(texts)]
    Path(path).write_text("".join(text + "\n" for text in texts), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- sparse files

_SPARSE_TOKEN = r"[0-9]{1,18}:[^\s:]+"
_SPARSE_ROW = re.compile(rf"\s*(?:{_SPARSE_TOKEN}(?:\s+{_SPARSE_TOKEN})*)?\s*")
_SPARSE_HINT = "each non-zero must be written 'col:value' (e.g. '12:1.0'), tokens separated by spaces"


def _explain_bad_row(path: Path, lineno: int, line: str) -> XCFormatError:
    """The precise complaint about a row line that failed the fast check."""
    for token in line.split():
        col, sep, value = token.partition(":")
        problem = None
        if not sep or not col or not value or ":" in value:
            problem = f"token {token!r} is not of the form 'col:value'"
        elif not col.isdigit() or not col.isascii():
            problem = f"column id {col!r} in {token!r} is not a non-negative integer"
        else:
            try:
                float(value)
            except ValueError:
                problem = f"value {value!r} in {token!r} is not a number"
        if problem:
            return XCFormatError(f"{_where(path, lineno)}: {problem}; {_SPARSE_HINT}.")
    return XCFormatError(f"{_where(path, lineno)}: cannot parse {line[:80]!r}; {_SPARSE_HINT}.")


def read_sparse_matrix(path: PathLike, shape: tuple[int, int] | None = None) -> sp.csr_matrix:
    """Read an XC sparse text matrix: header ``"rows cols"``, then one line of ``col:value`` tokens per row.

    Returns a float32 CSR with sorted indices and no explicit zeros (``col:0`` tokens are dropped). ``shape``, when
    given, must equal the header. Bad headers, row-count mismatches, bad tokens, out-of-range or repeated column
    ids and non-finite values raise :class:`XCFormatError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise XCMissingFileError(f"{path}: sparse matrix file not found (expected a 'rows cols' header line, then "
                                 "one line of 'col:value' tokens per row).")
    lines = _split_lines(path.read_text(encoding="utf-8-sig"))
    if not lines:
        raise XCFormatError(f"{_where(path, 1)}: empty file; expected a header line 'rows cols' (two integers).")
    header = lines[0].split()
    if len(header) != 2 or not all(part.isdigit() and part.isascii() for part in header):
        raise XCFormatError(
            f"{_where(path, 1)}: bad header {lines[0][:80]!r}; expected exactly two non-negative integers "
            "'rows cols' (the matrix shape), e.g. '1000 5000'. Write the shape as the first line of the file."
        )
    num_rows, num_cols = int(header[0]), int(header[1])
    if shape is not None and (num_rows, num_cols) != tuple(shape):
        raise XCFormatError(f"{_where(path, 1)}: header says shape ({num_rows}, {num_cols}), expected "
                            f"{tuple(shape)}; fix the header or pass the matching shape.")
    rows = lines[1:]
    if len(rows) != num_rows:
        raise XCFormatError(
            f"{path}: header (line 1) says {num_rows} rows but {len(rows)} row lines follow; every row needs exactly "
            "one line (an empty line for a row without non-zeros). Fix the header or add/remove row lines."
        )
    for index, line in enumerate(rows):
        if not _SPARSE_ROW.fullmatch(line):
            raise _explain_bad_row(path, index + 2, line)
    counts = np.fromiter((line.count(":") for line in rows), dtype=np.int64, count=num_rows)
    flat = " ".join(rows).replace(":", " ").split()
    cols = np.array(flat[0::2], dtype=np.int64) if flat else np.zeros(0, np.int64)
    try:
        values = np.array(flat[1::2], dtype=np.float64) if flat else np.zeros(0, np.float64)
    except ValueError:
        for index, line in enumerate(rows):
            try:
                [float(token.partition(":")[2]) for token in line.split()]
            except ValueError:
                raise _explain_bad_row(path, index + 2, line) from None
        raise
    row_ids = np.repeat(np.arange(num_rows, dtype=np.int64), counts)
    bad = np.flatnonzero(cols >= num_cols)
    if bad.size:
        first = bad[0]
        raise XCFormatError(
            f"{_where(path, row_ids[first] + 2)}: column id {cols[first]} is out of range; the header declares "
            f"{num_cols} columns (valid ids 0..{num_cols - 1}). Fix the id or the header's column count."
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise XCFormatError(f"{_where(path, row_ids[bad[0]] + 2)}: value {values[bad[0]]} for column "
                            f"{cols[bad[0]]} is not a finite number; write a finite weight.")
    if cols.size:
        keys = np.sort(row_ids * max(num_cols, 1) + cols)
        repeated = np.flatnonzero(keys[1:] == keys[:-1])
        if repeated.size:
            key = keys[repeated[0]]
            raise XCFormatError(
                f"{_where(path, key // max(num_cols, 1) + 2)}: column id {key % max(num_cols, 1)} appears more than "
                "once in this row; each column may appear at most once per row (merge the duplicates)."
            )
    indptr = np.concatenate([[0], np.cumsum(counts)])
    matrix = sp.csr_matrix((values.astype(np.float32), cols, indptr), shape=(num_rows, num_cols))
    return _canonical(matrix)


def _canonical(matrix: Any, dtype: type = np.float32) -> sp.csr_matrix:
    """CSR of ``dtype`` with summed duplicates, sorted indices and no explicit zeros (the invariants we promise)."""
    matrix = sp.csr_matrix(matrix, dtype=dtype, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def _format_values(values: np.ndarray) -> list[str]:
    """Shortest strings that read back to the same float32 (integers without a decimal point)."""
    if values.size and np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
        return [str(v) for v in values.astype(np.int64).tolist()]
    return [repr(v) for v in values.astype(np.float64).tolist()]  # float32 -> float64 is exact; repr round-trips


def write_sparse_matrix(path: PathLike, matrix: Any) -> None:
    """Write ``matrix`` in the XC sparse text format (values as float32, which :func:`read_sparse_matrix` returns)."""
    matrix = _canonical(matrix)
    tokens = [f"{c}:{v}" for c, v in zip(matrix.indices.tolist(), _format_values(matrix.data))]
    indptr = matrix.indptr.tolist()
    out = [f"{matrix.shape[0]} {matrix.shape[1]}\n"]
    out += [" ".join(tokens[indptr[i] : indptr[i + 1]]) + "\n" for i in range(matrix.shape[0])]
    Path(path).write_text("".join(out), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- containers


@dataclass
class XCSplit:
    """The points of one split: their texts and a binary (or weighted) label matrix [num_points, num_labels].

    ``labels`` is normalised on construction to float32 CSR with sorted indices and no explicit zeros, so code
    downstream (samplers, metrics) can rely on those invariants.
    """

    texts: list[str]
    labels: sp.csr_matrix

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.labels = _canonical(self.labels)
        if self.labels.shape[0] != len(self.texts):
            raise ValueError(f"XCSplit: {len(self.texts)} texts but the label matrix has {self.labels.shape[0]} rows.")

    def __len__(self) -> int:
        return len(self.texts)

    def label_lists(self) -> list[list[int]]:
        """Relevant label ids of each point, ascending (the rows of ``labels``)."""
        indices, indptr = self.labels.indices.tolist(), self.labels.indptr.tolist()
        return [indices[indptr[i] : indptr[i + 1]] for i in range(len(self))]

    def to_dataset(self) -> "datasets.Dataset":
        """A ``datasets.Dataset`` with ``text``, ``label_ids`` (ascending label ids) and ``point_id`` (the row index).

        ``point_id`` survives shuffling/tokenizing, so predictions can be mapped back onto rows of ``labels``.
        """
        import datasets

        features = datasets.Features({
            "text": datasets.Value("string"),
            "label_ids": datasets.Sequence(datasets.Value("int64")),
            "point_id": datasets.Value("int64"),
        })
        return datasets.Dataset.from_dict(
            {"text": self.texts, "label_ids": self.label_lists(), "point_id": list(range(len(self)))}, features=features
        )


@dataclass
class MetadataGraph:
    """Edges from train points to anchor nodes (with texts); used only as a training regularizer, never at inference.

    ``matrix`` is [num_train_points, num_anchors], non-negative float32 CSR; ``anchor_texts[a]`` is anchor a's text.
    """

    name: str
    matrix: sp.csr_matrix
    anchor_texts: list[str]

    def __post_init__(self) -> None:
        self.anchor_texts = list(self.anchor_texts)
        self.matrix = _canonical(self.matrix)
        if self.matrix.shape[1] != len(self.anchor_texts):
            raise ValueError(f"MetadataGraph {self.name!r}: the matrix has {self.matrix.shape[1]} anchor columns but "
                             f"{len(self.anchor_texts)} anchor texts were given.")
        if self.matrix.nnz and self.matrix.data.min() < 0:
            raise ValueError(f"MetadataGraph {self.name!r}: edge weights must be non-negative.")

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_texts)


@dataclass
class XCData:
    """An XC task: train/test splits over one label set, label texts, and metadata graphs over the train points.

    ``filter_pairs`` ([n, 2] ints: test row, label id) are excluded from evaluation, as the repository's
    ``filter_labels_test.txt`` prescribes (e.g. a Wikipedia page listing itself). ``extras`` carries provenance such
    as the original item ids of a derived dataset.
    """

    name: str
    train: XCSplit
    test: XCSplit
    label_texts: list[str]
    graphs: dict[str, MetadataGraph] = field(default_factory=dict)
    filter_pairs: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label_texts = list(self.label_texts)
        for split_name, split in (("train", self.train), ("test", self.test)):
            if split.labels.shape[1] != self.num_labels:
                raise ValueError(f"XCData {self.name!r}: the {split_name} label matrix has {split.labels.shape[1]} "
                                 f"columns but there are {self.num_labels} label texts.")
        for key, graph in self.graphs.items():
            if graph.matrix.shape[0] != len(self.train):
                raise ValueError(f"XCData {self.name!r}: graph {key!r} has {graph.matrix.shape[0]} rows but there are "
                                 f"{len(self.train)} train points (graph rows must be the train points).")
        if self.filter_pairs is not None:
            pairs = np.asarray(self.filter_pairs, dtype=np.int64).reshape(-1, 2)
            if pairs.size and (pairs.min() < 0 or pairs[:, 0].max() >= len(self.test)
                               or pairs[:, 1].max() >= self.num_labels):
                raise ValueError(f"XCData {self.name!r}: filter_pairs hold (test row, label) ids out of range.")
            self.filter_pairs = pairs

    @property
    def num_labels(self) -> int:
        return len(self.label_texts)

    def head(self, num_train: int | None = None, num_test: int | None = None, graphs: Sequence[str] | None = None) -> "XCData":
        """The first ``num_train`` train / ``num_test`` test points (None = all) with their graph rows and filter
        pairs, same labels; ``graphs`` keeps only the named graphs. For quick runs on a slice of a big set."""
        train = XCSplit(self.train.texts[:num_train], self.train.labels[:num_train])
        test = XCSplit(self.test.texts[:num_test], self.test.labels[:num_test])
        kept = {name: MetadataGraph(name, graph.matrix[:num_train], graph.anchor_texts)
                for name, graph in self.graphs.items() if graphs is None or name in graphs}
        pairs = self.filter_pairs
        if pairs is not None:
            pairs = pairs[pairs[:, 0] < len(test)]
        return XCData(name=self.name, train=train, test=test, label_texts=self.label_texts, graphs=kept,
                      filter_pairs=pairs, extras=dict(self.extras))

    def label_frequencies(self) -> np.ndarray:
        """Number of train points tagged with each label (the n_l of the propensity formula), int64 [num_labels]."""
        return np.bincount(self.train.labels.indices, minlength=self.num_labels).astype(np.int64)

    def summary(self) -> dict:
        """Sizes and densities, for logs and model cards (plain Python numbers, JSON-serialisable)."""
        freqs = self.label_frequencies()
        train_nnz, test_nnz = int(self.train.labels.nnz), int(self.test.labels.nnz)
        graphs = {}
        for key, graph in self.graphs.items():
            degree = np.diff(graph.matrix.indptr)
            graphs[key] = {
                "num_anchors": graph.num_anchors,
                "edges": int(graph.matrix.nnz),
                "avg_edges_per_point": float(graph.matrix.nnz / max(len(self.train), 1)),
                "points_without_edges": int((degree == 0).sum()),
            }
        return {
            "name": self.name,
            "num_train": len(self.train),
            "num_test": len(self.test),
            "num_labels": self.num_labels,
            "train_label_pairs": train_nnz,
            "test_label_pairs": test_nnz,
            "avg_labels_per_train_point": float(train_nnz / max(len(self.train), 1)),
            "avg_labels_per_test_point": float(test_nnz / max(len(self.test), 1)),
            "avg_train_points_per_label": float(train_nnz / max(self.num_labels, 1)),
            "labels_without_train_points": int((freqs == 0).sum()),
            "num_filter_pairs": 0 if self.filter_pairs is None else int(len(self.filter_pairs)),
            "graphs": graphs,
        }


# ------------------------------------------------------------------------------------------- XC repository


def _read_filter_pairs(path: Path, num_test: int, num_labels: int) -> np.ndarray:
    pairs = []
    for lineno, line in enumerate(_split_lines(path.read_text(encoding="utf-8-sig")), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(p.isdigit() and p.isascii() for p in parts):
            raise XCFormatError(f"{_where(path, lineno)}: expected 'test_row label_id' (two non-negative integers), "
                                f"got {line[:80]!r}.")
        row, label = int(parts[0]), int(parts[1])
        if row >= num_test or label >= num_labels:
            raise XCFormatError(f"{_where(path, lineno)}: pair ({row}, {label}) is out of range; test rows are "
                                f"0..{num_test - 1} and label ids 0..{num_labels - 1}.")
        pairs.append((row, label))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _check_rows(matrix: sp.csr_matrix, matrix_path: Path, texts: list[str], text_path: Path) -> None:
    if matrix.shape[0] != len(texts):
        raise XCFormatError(f"{matrix_path}: header (line 1) says {matrix.shape[0]} rows but {text_path} has "
                            f"{len(texts)} texts; row i of the matrix must be line i of the text file.")


def _check_columns(matrix: sp.csr_matrix, matrix_path: Path, count: int, text_path: Path, what: str) -> None:
    """The matrix columns must be exactly the lines of ``text_path`` (labels or anchors)."""
    if matrix.shape[1] == count:
        return
    bad = np.flatnonzero(matrix.indices >= count)
    if bad.size:
        row = int(np.searchsorted(matrix.indptr, bad[0], side="right") - 1)
        raise XCFormatError(f"{_where(matrix_path, row + 2)}: {what} id {matrix.indices[bad[0]]} is out of range; "
                            f"{text_path} has {count} {what} texts (valid ids 0..{count - 1}).")
    raise XCFormatError(f"{matrix_path}: header (line 1) says {matrix.shape[1]} columns but {text_path} has {count} "
                        f"{what} texts; they must agree (column j is line j of {text_path.name}).")


def _graph_files(folder: Path, graphs: Sequence[str] | Mapping[str, Any] | None) -> dict[str, tuple[Path, Path]]:
    if graphs is None:
        names = sorted(p.name[len(GRAPH_PREFIX) : -len(".txt")] for p in folder.glob(f"{GRAPH_PREFIX}*.txt"))
        return {n: (folder / f"{GRAPH_PREFIX}{n}.txt", folder / f"{ANCHOR_PREFIX}{n}.txt") for n in names}
    if isinstance(graphs, Mapping):
        files = {}
        for name, pair in graphs.items():
            if isinstance(pair, (str, os.PathLike)) or len(pair) != 2:
                raise ValueError(f"graphs[{name!r}] must be a (matrix file, anchor text file) pair, got {pair!r}.")
            files[str(name)] = tuple(Path(p) if Path(p).is_absolute() else folder / p for p in pair)
        return files
    if isinstance(graphs, str):
        graphs = [graphs]
    return {n: (folder / f"{GRAPH_PREFIX}{n}.txt", folder / f"{ANCHOR_PREFIX}{n}.txt") for n in graphs}


def load_xc_repository(
    folder: PathLike, graphs: Sequence[str] | Mapping[str, Any] | None = None, name: str | None = None
) -> XCData:
    """Load an XC-repository folder (layout in the module docstring) and cross-check every file against the others.

    ``graphs``: ``None`` loads every ``trn_X_Z_<graph>.txt`` found; a list of names loads those (each must exist);
    a dict ``{name: (matrix file, anchor text file)}`` loads files with other names (relative to ``folder``).
    ``name`` defaults to the folder's name.
    """
    folder = Path(folder)
    missing = [f for f in REQUIRED_XC_FILES if not (folder / f).is_file()]
    if missing:
        raise XCMissingFileError(
            f"{folder}: missing {', '.join(missing)}. An XC-repository folder needs {', '.join(REQUIRED_XC_FILES)} "
            f"(optional: {FILTER_FILE}, {GRAPH_PREFIX}<graph>.txt with {ANCHOR_PREFIX}<graph>.txt)."
        )
    label_path = folder / "lbl_X.txt"
    label_texts = read_texts(label_path)
    splits = {}
    for prefix in ("trn", "tst"):
        text_path, matrix_path = folder / f"{prefix}_X.txt", folder / f"{prefix}_X_Y.txt"
        texts, matrix = read_texts(text_path), read_sparse_matrix(matrix_path)
        _check_rows(matrix, matrix_path, texts, text_path)
        _check_columns(matrix, matrix_path, len(label_texts), label_path, "label")
        splits[prefix] = XCSplit(texts, matrix)
    filter_path = folder / FILTER_FILE
    filter_pairs = (_read_filter_pairs(filter_path, len(splits["tst"]), len(label_texts))
                    if filter_path.is_file() else None)
    loaded = {}
    for graph_name, (matrix_path, anchor_path) in _graph_files(folder, graphs).items():
        absent = [str(p) for p in (matrix_path, anchor_path) if not p.is_file()]
        if absent:
            raise XCMissingFileError(
                f"graph {graph_name!r}: missing {', '.join(absent)}; a metadata graph needs both the matrix "
                f"{GRAPH_PREFIX}<graph>.txt and the anchor texts {ANCHOR_PREFIX}<graph>.txt."
            )
        matrix, anchors = read_sparse_matrix(matrix_path), read_texts(anchor_path)
        if matrix.shape[0] != len(splits["trn"]):
            raise XCFormatError(f"{matrix_path}: header (line 1) says {matrix.shape[0]} rows but there are "
                                f"{len(splits['trn'])} train points in trn_X.txt; graph rows must be the train points.")
        _check_columns(matrix, matrix_path, len(anchors), anchor_path, "anchor")
        if matrix.nnz and matrix.data.min() < 0:
            entry = int(np.flatnonzero(matrix.data < 0)[0])
            row = int(np.searchsorted(matrix.indptr, entry, side="right") - 1)
            raise XCFormatError(f"{_where(matrix_path, row + 2)}: negative edge weight {matrix.data[entry]}; "
                                "metadata graph weights must be non-negative.")
        loaded[graph_name] = MetadataGraph(graph_name, matrix, anchors)
    return XCData(name or folder.resolve().name, splits["trn"], splits["tst"], label_texts, loaded, filter_pairs)


def write_xc_repository(data: XCData, folder: PathLike) -> Path:
    """Write ``data`` as an XC-repository folder (created if needed) that :func:`load_xc_repository` reads back.

    ``name`` and ``extras`` are not part of the format and are not written.
    """
    folder = Path(folder)
    for graph_name in data.graphs:
        if not _GRAPH_NAME.fullmatch(graph_name):
            raise ValueError(f"graph name {graph_name!r} cannot be a file name; use letters, digits, '_', '-', '.'.")
    folder.mkdir(parents=True, exist_ok=True)
    write_texts(folder / "trn_X.txt", data.train.texts)
    write_texts(folder / "tst_X.txt", data.test.texts)
    write_texts(folder / "lbl_X.txt", data.label_texts)
    write_sparse_matrix(folder / "trn_X_Y.txt", data.train.labels)
    write_sparse_matrix(folder / "tst_X_Y.txt", data.test.labels)
    if data.filter_pairs is not None:
        pairs = np.asarray(data.filter_pairs, dtype=np.int64).reshape(-1, 2)
        (folder / FILTER_FILE).write_text("".join(f"{r} {c}\n" for r, c in pairs.tolist()), encoding="utf-8")
    for graph_name, graph in data.graphs.items():
        write_sparse_matrix(folder / f"{GRAPH_PREFIX}{graph_name}.txt", graph.matrix)
        write_texts(folder / f"{ANCHOR_PREFIX}{graph_name}.txt", graph.anchor_texts)
    return folder


# --------------------------------------------------------------------------------------------- citeulike-a

_ID_LIST = re.compile(r"\s*[0-9]{1,18}(?:\s+[0-9]{1,18})*\s*")


def _read_id_lists(path: Path, num_ids: int, id_kind: str) -> sp.csr_matrix:
    """A citeulike ``.dat`` file (line i = "count id id ...") as a binary CSR [num_lines, num_ids].

    The leading count must equal the number of ids that follow; a repeated id on one line counts once.
    """
    if not path.is_file():
        raise XCMissingFileError(f"{path}: citeulike-a file not found.")
    lines = _split_lines(path.read_text(encoding="utf-8-sig"))
    for index, line in enumerate(lines):
        if not _ID_LIST.fullmatch(line):
            raise XCFormatError(f"{_where(path, index + 1)}: expected 'count id id ...' (non-negative integers; a "
                                f"line '0' for none), got {line[:80]!r}.")
    counts = np.fromiter((len(line.split()) - 1 for line in lines), dtype=np.int64, count=len(lines))
    flat = np.array(" ".join(lines).split(), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    declared = flat[starts] if len(lines) else np.zeros(0, np.int64)
    wrong = np.flatnonzero(declared != counts)
    if wrong.size:
        i = wrong[0]
        raise XCFormatError(f"{_where(path, i + 1)}: the line starts with count {declared[i]} but {counts[i]} ids "
                            "follow; the first number must be the number of ids after it.")
    mask = np.ones(flat.size, dtype=bool)
    mask[starts] = False
    ids = flat[mask]
    bad = np.flatnonzero(ids >= num_ids)
    if bad.size:
        row = int(np.searchsorted(np.cumsum(counts), bad[0], side="right"))
        raise XCFormatError(f"{_where(path, row + 1)}: {id_kind} id {ids[bad[0]]} is out of range (there are "
                            f"{num_ids} {id_kind}s, ids 0..{num_ids - 1}).")
    indptr = np.concatenate([[0], np.cumsum(counts)])
    matrix = sp.csr_matrix((np.ones(ids.size, np.float32), ids, indptr), shape=(len(lines), num_ids))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _top_k_per_row(matrix: sp.csr_matrix, k: int | None) -> sp.csr_matrix:
    """Keep each row's k largest entries; ties go to the lower column (= lower item id: columns are id-sorted)."""
    matrix = _canonical(matrix)
    if k is None or matrix.nnz == 0:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))  # by row, then weight desc, then column asc
    rank = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    keep = order[rank < k]
    return _canonical(sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape))


def _drop_self_edges(matrix: sp.csr_matrix, row_items: np.ndarray, col_items: np.ndarray) -> sp.csr_matrix:
    """Zero the entries linking an item to itself (row item id == anchor item id)."""
    matrix = sp.csr_matrix(matrix, copy=True)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    matrix.data[row_items[rows] == col_items[matrix.indices]] = 0
    matrix.eliminate_zeros()
    return matrix


def load_citeulike(
    data_root: PathLike | None = None,
    min_tag_frequency: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    coread_top_k: int | None = 10,
    coread_min_count: int = 2,
    anchors: str = "train",
    drop_unlabeled: bool = True,
) -> XCData:
    """citeulike-a as an XC tag-recommendation task: paper title -> its CiteULike tags, with two metadata graphs.

    - Points: the 16,980 items (text = title, ``citeutitles.txt``). Labels: tags on at least ``min_tag_frequency``
      items (counted over all items, before the split), ids renumbered 0.. in increasing original tag id. The label
      text is the tag name with runs of ``_``/``-`` turned into one space (``metabolic_networks`` -> ``metabolic
      networks``; a name of only ``_``/``-`` stays as is); raw names are in ``extras["tag_names"]``.
    - Items left without a label are dropped when ``drop_unlabeled`` (count in ``extras["num_dropped_unlabeled"]``).
    - Split: ``perm = np.random.default_rng(seed).permutation(n)`` over the n kept items (ascending item id); the
      items at ``perm[:round(test_fraction * n)]`` are test, the rest train. Within each split, points are in
      increasing item id; ``extras["train_item_ids"]`` / ``["test_item_ids"]`` give the original ids.
    - Graph ``citation``: citation links made symmetric (A + Aᵀ, binary, self-citations removed).
      Graph ``coread``: co-readership ``C = Uᵀ U`` over the users x items library matrix, item itself excluded,
      counts below ``coread_min_count`` dropped, the ``coread_top_k`` largest kept per train item (ties: lower item
      id; ``None`` keeps all); weight = number of shared readers.
    - Graph rows are the train points. ``anchors="train"`` (default): anchors are the train items only, in train
      order (anchor a is train point a), so no test text is seen in training. ``anchors="all"``: anchors are all
      16,980 items by item id (this exposes test titles to training). ``extras["anchor_item_ids"]`` maps anchors.
    """
    if anchors not in ("train", "all"):
        raise ValueError(f"anchors must be 'train' or 'all', got {anchors!r}.")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    if min_tag_frequency < 1 or coread_min_count < 1 or (coread_top_k is not None and coread_top_k < 1):
        raise ValueError("min_tag_frequency and coread_min_count must be >= 1, coread_top_k >= 1 or None.")
    root = Path(data_root) if data_root is not None else data_dir(CITEULIKE_DIR)
    if (root / CITEULIKE_DIR).is_dir():
        root = root / CITEULIKE_DIR
    needed = ["citeutitles.txt", "tags.dat", "item-tag.dat", "citations.dat", "users.dat"]
    missing = [f for f in needed if not (root / f).is_file()]
    if missing:
        raise XCMissingFileError(f"{root}: missing {', '.join(missing)}; citeulike-a needs {', '.join(needed)}.")

    titles = read_texts(root / "citeutitles.txt")
    tag_names = read_texts(root / "tags.dat")
    num_items = len(titles)
    item_tags = _read_id_lists(root / "item-tag.dat", len(tag_names), "tag")
    citations = _read_id_lists(root / "citations.dat", num_items, "item")
    libraries = _read_id_lists(root / "users.dat", num_items, "item")
    for path, matrix in (("item-tag.dat", item_tags), ("citations.dat", citations)):
        if matrix.shape[0] != num_items:
            raise XCFormatError(f"{root / path}: {matrix.shape[0]} lines but citeutitles.txt has {num_items} titles; "
                                "line i of every item file must describe item i.")

    # labels: frequent tags, counted over all items
    tag_counts = np.bincount(item_tags.indices, minlength=len(tag_names))
    label_tag_ids = np.flatnonzero(tag_counts >= min_tag_frequency)
    item_labels = _canonical(item_tags[:, label_tag_ids])
    labeled = np.diff(item_labels.indptr) > 0
    kept = np.flatnonzero(labeled) if drop_unlabeled else np.arange(num_items)

    # seeded split over the kept items
    perm = np.random.default_rng(seed).permutation(len(kept))
    num_test = int(round(test_fraction * len(kept)))
    test_ids, train_ids = np.sort(kept[perm[:num_test]]), np.sort(kept[perm[num_test:]])
    if train_ids.size == 0:
        raise ValueError("The split left no train items; lower test_fraction or min_tag_frequency.")
    anchor_ids = train_ids if anchors == "train" else np.arange(num_items)
    anchor_texts = [titles[i] for i in anchor_ids]

    # graphs over train rows x anchor columns
    linked = _canonical((citations + citations.T) > 0)
    citation = _canonical(_drop_self_edges(linked[train_ids][:, anchor_ids], train_ids, anchor_ids))
    libraries_t = libraries.T.tocsr()
    shared = (libraries_t[train_ids] @ libraries[:, anchor_ids]).tocsr()  # rows of C = Uᵀ U, restricted
    shared.data[shared.data < coread_min_count] = 0  # thresholding first keeps the later steps small
    shared.eliminate_zeros()
    coread = _top_k_per_row(_drop_self_edges(shared, train_ids, anchor_ids), coread_top_k)

    readable = [re.sub(r"[_\-]+", " ", tag_names[t]).strip() or tag_names[t] for t in label_tag_ids]
    extras = {
        "tag_names": [tag_names[t] for t in label_tag_ids],
        "label_tag_ids": label_tag_ids.astype(np.int64),
        "train_item_ids": train_ids.astype(np.int64),
        "test_item_ids": test_ids.astype(np.int64),
        "anchor_item_ids": anchor_ids.astype(np.int64),
        "num_items": num_items,
        "num_dropped_unlabeled": int(num_items - len(kept)),
        "num_citation_self_links": int(citations.diagonal().sum()),
        "params": {"min_tag_frequency": min_tag_frequency, "test_fraction": test_fraction, "seed": seed,
                   "coread_top_k": coread_top_k, "coread_min_count": coread_min_count, "anchors": anchors,
                   "drop_unlabeled": drop_unlabeled},
    }
    return XCData(
        name=CITEULIKE_DIR,
        train=XCSplit([titles[i] for i in train_ids], item_labels[train_ids]),
        test=XCSplit([titles[i] for i in test_ids], item_labels[test_ids]),
        label_texts=readable,
        graphs={
            "citation": MetadataGraph("citation", citation, anchor_texts),
            "coread": MetadataGraph("coread", coread, list(anchor_texts)),
        },
        filter_pairs=None,
        extras=extras,
    )
