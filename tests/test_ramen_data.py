"""RAMEN data layer: XC-repository files (exact parsing, clear errors, round trips) and the citeulike-a task."""

from __future__ import annotations

import collections
from pathlib import Path

import datasets
import numpy as np
import pytest
import scipy.sparse as sp

from hf_compress.data import data_dir
from hf_compress.ramen.data import (
    MetadataGraph,
    XCData,
    XCFormatError,
    XCSplit,
    load_citeulike,
    load_xc_repository,
    read_sparse_matrix,
    read_texts,
    write_sparse_matrix,
    write_texts,
    write_xc_repository,
)

# ------------------------------------------------------------------------------------------ hand-made folders

SMALL = {
    "trn_X.txt": "first point\nsecond point\nthird point\n",
    "tst_X.txt": "a test point\nanother one\n",
    "lbl_X.txt": "label zero\nlabel one\nlabel two\nlabel three\n",
    "trn_X_Y.txt": "3 4\n0:1 2:1\n\n3:1 1:1\n",  # row 1 empty; row 2 unsorted on purpose
    "tst_X_Y.txt": "2 4\n1:1\n0:1 3:1\n",
    "filter_labels_test.txt": "0 2\n1 1\n",
    "trn_X_Z_cite.txt": "3 2\n1:2.5\n0:1\n\n",
    "Z_cite.txt": "anchor a\nanchor b\n",
}


def make_folder(root: Path, overrides: dict[str, str | None] | None = None) -> Path:
    """Write SMALL (with some files replaced, or removed when the override is None) into root."""
    files = dict(SMALL, **(overrides or {}))
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content is not None:
            (root / name).write_text(content, encoding="utf-8")
    return root


def test_small_folder_is_parsed_exactly(tmp_path):
    data = load_xc_repository(make_folder(tmp_path / "small"))
    assert data.name == "small"
    assert data.train.texts == ["first point", "second point", "third point"]
    assert data.test.texts == ["a test point", "another one"]
    assert data.label_texts == ["label zero", "label one", "label two", "label three"]
    np.testing.assert_array_equal(data.train.labels.toarray(), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(data.test.labels.toarray(), [[0, 1, 0, 0], [1, 0, 0, 1]])
    for matrix in (data.train.labels, data.test.labels, data.graphs["cite"].matrix):
        assert isinstance(matrix, sp.csr_matrix) and matrix.dtype == np.float32 and matrix.has_sorted_indices
    np.testing.assert_array_equal(data.filter_pairs, [[0, 2], [1, 1]])
    assert list(data.graphs) == ["cite"]
    graph = data.graphs["cite"]
    assert graph.anchor_texts == ["anchor a", "anchor b"]
    np.testing.assert_array_equal(graph.matrix.toarray(), [[0, 2.5], [1, 0], [0, 0]])
    np.testing.assert_array_equal(data.label_frequencies(), [1, 1, 1, 1])
    summary = data.summary()
    assert (summary["num_train"], summary["num_test"], summary["num_labels"]) == (3, 2, 4)
    assert summary["avg_labels_per_train_point"] == pytest.approx(4 / 3)
    assert summary["avg_train_points_per_label"] == pytest.approx(1.0)
    assert summary["num_filter_pairs"] == 2
    assert summary["graphs"]["cite"] == {"num_anchors": 2, "edges": 2, "avg_edges_per_point": pytest.approx(2 / 3),
                                         "points_without_edges": 1}


def test_optional_files_and_graph_selection(tmp_path):
    folder = make_folder(tmp_path / "f", {"filter_labels_test.txt": None, "trn_X_Z_cite.txt": None, "Z_cite.txt": None})
    data = load_xc_repository(folder, name="custom")
    assert data.name == "custom" and data.filter_pairs is None and data.graphs == {}

    folder = make_folder(tmp_path / "g", {"trn_X_Z_other.txt": "3 1\n0:1\n0:1\n0:1\n", "Z_other.txt": "x\n"})
    assert sorted(load_xc_repository(folder).graphs) == ["cite", "other"]
    assert list(load_xc_repository(folder, graphs=["other"]).graphs) == ["other"]
    assert load_xc_repository(folder, graphs=[]).graphs == {}
    (folder / "links.txt").write_text("3 2\n1:1\n\n0:1\n")
    picked = load_xc_repository(folder, graphs={"links": ("links.txt", "Z_cite.txt")}).graphs
    np.testing.assert_array_equal(picked["links"].matrix.toarray(), [[0, 1], [0, 0], [1, 0]])
    with pytest.raises(XCFormatError, match=r"trn_X_Z_nope\.txt.*Z_nope\.txt"):
        load_xc_repository(folder, graphs=["nope"])


def test_id_arrow_text_format(tmp_path):
    path = tmp_path / "raw.txt"
    path.write_text("B0001->The first -> title\r\n17->second\r\nx9->\r\n")
    assert read_texts(path) == ["The first -> title", "second", ""]
    path.write_text("12->has an id\nthis line has none\n")  # not every line has an id: kept verbatim
    assert read_texts(path) == ["12->has an id", "this line has none"]
    path.write_text("no final newline\n\nlast")
    assert read_texts(path) == ["no final newline", "", "last"]
    path.write_text("")
    assert read_texts(path) == []
    folder = make_folder(tmp_path / "arrow", {"trn_X.txt": "7->first point\n8->second point\n9->third point\n"})
    assert load_xc_repository(folder).train.texts == ["first point", "second point", "third point"]
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_texts(tmp_path / "absent.txt")


def test_read_sparse_matrix_details(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("3 5\r\n4:0.25  1:2\r\n\r\n0:1e-3 2:0\r\n")  # CRLF, double space, an explicit zero dropped
    matrix = read_sparse_matrix(path)
    np.testing.assert_allclose(matrix.toarray(), [[0, 2, 0, 0, 0.25], [0, 0, 0, 0, 0], [1e-3, 0, 0, 0, 0]])
    assert matrix.nnz == 3 and matrix.has_sorted_indices and matrix.dtype == np.float32
    path.write_text("2 3\n\n\n")  # two empty rows: each row line ends with its own newline
    assert read_sparse_matrix(path, shape=(2, 3)).nnz == 0
    path.write_text("2 3\n0:1\n2:1")  # no final newline
    np.testing.assert_array_equal(read_sparse_matrix(path, shape=(2, 3)).toarray(), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(XCFormatError, match=r"m\.txt, line 1: header says shape \(2, 3\), expected \(2, 4\)"):
        read_sparse_matrix(path, shape=(2, 4))
    path.write_text("0 7\n")
    assert read_sparse_matrix(path).shape == (0, 7)


BAD_CASES = [
    # (file overrides, file the message must name, regex the message must match)
    ({"trn_X_Y.txt": "3 4 1\n0:1\n\n1:1\n"}, "trn_X_Y.txt", r"line 1: bad header .*two non-negative integers 'rows cols'"),
    ({"trn_X_Y.txt": "3 four\n0:1\n\n1:1\n"}, "trn_X_Y.txt", r"line 1: bad header"),
    ({"trn_X_Y.txt": ""}, "trn_X_Y.txt", r"line 1: empty file; expected a header"),
    ({"trn_X_Y.txt": "4 4\n0:1\n\n1:1\n"}, "trn_X_Y.txt", r"says 4 rows but 3 row lines follow"),
    ({"trn_X_Y.txt": "2 4\n0:1\n1:1\n"}, "trn_X_Y.txt", r"says 2 rows but .*trn_X\.txt has 3 texts"),
    ({"tst_X_Y.txt": "2 4\n1:1\n0:1 4:1\n"}, "tst_X_Y.txt", r"line 3: column id 4 is out of range.*4 columns"),
    ({"tst_X_Y.txt": "2 4\n-1:1\n0:1\n"}, "tst_X_Y.txt", r"line 2: column id '-1' .*not a non-negative integer"),
    ({"tst_X_Y.txt": "2 9\n1:1\n0:1 6:1\n"}, "tst_X_Y.txt", r"line 3: label id 6 is out of range; .*lbl_X\.txt has 4"),
    ({"tst_X_Y.txt": "2 9\n1:1\n0:1\n"}, "tst_X_Y.txt", r"says 9 columns but .*lbl_X\.txt has 4 label texts"),
    ({"trn_X_Y.txt": "3 4\n0:1\n\n1\n"}, "trn_X_Y.txt", r"line 4: token '1' is not of the form 'col:value'"),
    ({"trn_X_Y.txt": "3 4\n0:1\n\n1:yes\n"}, "trn_X_Y.txt", r"line 4: value 'yes' in '1:yes' is not a number"),
    ({"trn_X_Y.txt": "3 4\n0:1:1\n\n1:1\n"}, "trn_X_Y.txt", r"line 2: token '0:1:1' is not of the form"),
    ({"trn_X_Y.txt": "3 4\n0:1\n\n1:1 1:1\n"}, "trn_X_Y.txt", r"line 4: column id 1 appears more than once"),
    ({"trn_X_Y.txt": "3 4\n0:1\n\n1:nan\n"}, "trn_X_Y.txt", r"line 4: value nan .*not a finite number"),
    ({"trn_X_Z_cite.txt": "2 2\n1:1\n0:1\n"}, "trn_X_Z_cite.txt", r"says 2 rows but there are 3 train points"),
    ({"Z_cite.txt": "a\nb\nc\n"}, "trn_X_Z_cite.txt", r"says 2 columns but .*Z_cite\.txt has 3 anchor"),
    ({"Z_cite.txt": "only one anchor\n"}, "trn_X_Z_cite.txt", r"line 2: anchor id 1 is out of range; .*Z_cite\.txt has 1"),
    ({"trn_X_Z_cite.txt": "3 2\n1:1\n0:-2\n\n"}, "trn_X_Z_cite.txt", r"line 3: negative edge weight"),
    ({"Z_cite.txt": None}, "Z_cite.txt", r"missing .*Z_cite\.txt.*needs both"),
    ({"filter_labels_test.txt": "0 2\n1\n"}, "filter_labels_test.txt", r"line 2: expected 'test_row label_id'"),
    ({"filter_labels_test.txt": "5 2\n"}, "filter_labels_test.txt", r"line 1: pair \(5, 2\) is out of range"),
    ({"lbl_X.txt": None}, "lbl_X.txt", r"missing lbl_X\.txt\. An XC-repository folder needs trn_X\.txt, tst_X\.txt"),
]


@pytest.mark.parametrize("overrides, culprit, pattern", BAD_CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CASES)])
def test_malformed_folders_raise_clear_errors(tmp_path, overrides, culprit, pattern):
    folder = make_folder(tmp_path / "bad", overrides)
    with pytest.raises(XCFormatError, match=pattern) as info:
        load_xc_repository(folder)
    assert culprit in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_files_are_also_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="trn_X_Y.txt, tst_X_Y.txt"):
        load_xc_repository(make_folder(tmp_path / "m", {"trn_X_Y.txt": None, "tst_X_Y.txt": None}))


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dense = (rng.random((6, 5)) < 0.4) * rng.random((6, 5)).astype(np.float32)
    dense[2] = 0  # an empty row
    dense[0, 0] = 1e-7
    labels = sp.csr_matrix((dense > 0).astype(np.float32))
    data = XCData(
        name="rt",
        train=XCSplit([f"ü {i} \x1c x" for i in range(4)], labels[:4]),
        test=XCSplit(["", "a->b"], labels[4:]),
        label_texts=[f"{i}->looks like an id" for i in range(5)],  # must not be stripped on reading
        graphs={"w": MetadataGraph("w", sp.csr_matrix(dense[:4, :3]), ["p", "q", "r"])},
        filter_pairs=np.array([[1, 4]]),
    )
    folder = write_xc_repository(data, tmp_path / "out")
    back = load_xc_repository(folder, name="rt")
    assert back.train.texts == data.train.texts and back.test.texts == data.test.texts
    assert back.label_texts == data.label_texts
    for a, b in [(data.train.labels, back.train.labels), (data.test.labels, back.test.labels),
                 (data.graphs["w"].matrix, back.graphs["w"].matrix)]:
        assert a.shape == b.shape and (a != b).nnz == 0
        np.testing.assert_array_equal(a.data, b.data)  # bit-exact float32
    assert back.graphs["w"].anchor_texts == ["p", "q", "r"]
    np.testing.assert_array_equal(back.filter_pairs, [[1, 4]])

    path = tmp_path / "single.txt"
    write_sparse_matrix(path, sp.csr_matrix(np.array([[0, 3], [0, 0], [2, 0]], dtype=np.float32)))
    assert path.read_text() == "3 2\n1:3\n\n0:2\n"
    with pytest.raises(ValueError, match="line break"):
        write_texts(tmp_path / "t.txt", ["fine", "two\nlines"])


def test_to_dataset_columns():
    split = XCSplit(["x", "y", "z"], sp.csr_matrix(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=np.float32)))
    ds = split.to_dataset()
    assert isinstance(ds, datasets.Dataset) and len(ds) == len(split) == 3
    assert ds.column_names == ["text", "label_ids", "point_id"]
    assert ds.features["label_ids"].feature.dtype == "int64" and ds.features["point_id"].dtype == "int64"
    assert ds["text"] == ["x", "y", "z"]
    assert ds["label_ids"] == [[1, 2], [], [0]]
    assert ds["point_id"] == [0, 1, 2]


def test_containers_check_their_shapes():
    with pytest.raises(ValueError, match="2 texts but the label matrix has 3 rows"):
        XCSplit(["a", "b"], sp.csr_matrix((3, 2)))
    split = XCSplit(["a"], sp.csr_matrix((1, 2)))
    with pytest.raises(ValueError, match="3 label texts"):
        XCData("d", split, split, ["l0", "l1", "l2"], {})
    with pytest.raises(ValueError, match="graph rows must be the train points"):
        XCData("d", split, split, ["l0", "l1"], {"g": MetadataGraph("g", sp.csr_matrix((2, 1)), ["a"])})


# ----------------------------------------------------------------------------------------------- citeulike-a


def _citeulike_root() -> Path:
    try:
        return data_dir("citeulike-a") / "citeulike-a"
    except FileNotFoundError:
        pytest.skip("citeulike-a is not in the offline data folder (set HF_COMPRESS_DATA to the folder holding "
                    "citeulike-a/)")


def _dat(root: Path, name: str) -> list[list[int]]:
    """Plain-Python reading of a citeulike .dat file (ids after the count)."""
    return [[int(x) for x in line.split()[1:]] for line in (root / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def citeulike_root() -> Path:
    return _citeulike_root()


@pytest.fixture(scope="module")
def citeulike(citeulike_root) -> XCData:
    return load_citeulike(citeulike_root.parent)


def test_citeulike_labels_and_split(citeulike_root, citeulike):
    titles = read_texts(citeulike_root / "citeutitles.txt")
    assert len(titles) == 16980
    item_tags = _dat(citeulike_root, "item-tag.dat")
    counts = collections.Counter(tag for tags in item_tags for tag in set(tags))
    frequent = sorted(tag for tag, n in counts.items() if n >= 5)
    assert citeulike.num_labels == len(frequent)
    kept = [i for i, tags in enumerate(item_tags) if any(counts[t] >= 5 for t in tags)]
    num_test = round(0.2 * len(kept))
    assert (len(citeulike.test), len(citeulike.train)) == (num_test, len(kept) - num_test)
    assert citeulike.extras["num_dropped_unlabeled"] == 16980 - len(kept)
    train_ids, test_ids = citeulike.extras["train_item_ids"], citeulike.extras["test_item_ids"]
    assert set(train_ids) | set(test_ids) == set(kept) and not set(train_ids) & set(test_ids)

    tag_names = (citeulike_root / "tags.dat").read_text().splitlines()
    assert citeulike.extras["tag_names"] == [tag_names[t] for t in frequent]
    assert citeulike.label_texts[frequent.index(tag_names.index("metabolic_networks"))] == "metabolic networks"
    for split, ids in ((citeulike.train, train_ids), (citeulike.test, test_ids)):
        for row in (0, len(split) // 2, len(split) - 1):
            item = int(ids[row])
            assert split.texts[row] == titles[item]
            expected = sorted(frequent.index(t) for t in set(item_tags[item]) if counts[t] >= 5)
            assert split.labels[row].indices.tolist() == expected
    assert citeulike.label_frequencies().sum() == citeulike.train.labels.nnz


def test_citeulike_split_is_seeded(citeulike_root, citeulike):
    again = load_citeulike(citeulike_root.parent)
    other = load_citeulike(citeulike_root.parent, seed=1)
    np.testing.assert_array_equal(again.extras["test_item_ids"], citeulike.extras["test_item_ids"])
    assert (again.graphs["coread"].matrix != citeulike.graphs["coread"].matrix).nnz == 0
    assert len(other.test) == len(citeulike.test)
    assert not np.array_equal(other.extras["test_item_ids"], citeulike.extras["test_item_ids"])


def test_citeulike_graphs(citeulike_root, citeulike):
    train_ids = citeulike.extras["train_item_ids"]
    test_ids = set(citeulike.extras["test_item_ids"].tolist())
    row_of = {int(item): row for row, item in enumerate(train_ids)}
    citations = _dat(citeulike_root, "citations.dat")
    assert citations[0] == [2, 485, 3284]  # PROVENANCE.md spot check
    for graph in citeulike.graphs.values():  # anchors are the train items only, in train order
        assert graph.matrix.shape == (len(train_ids), len(train_ids))
        assert graph.anchor_texts == citeulike.train.texts
        assert not test_ids & set(citeulike.extras["anchor_item_ids"].tolist())

    cite = citeulike.graphs["citation"].matrix
    assert (cite != cite.T).nnz == 0 and cite.diagonal().sum() == 0 and set(cite.data.tolist()) == {1.0}
    for item in (0, 2, 485, 3284):
        if item not in row_of:
            continue
        linked = {j for j in citations[item]} | {j for j, links in enumerate(citations) if item in links}
        expected = sorted(row_of[j] for j in linked - {item} if j in row_of)
        assert cite[row_of[item]].indices.tolist() == expected
    assert 0 in row_of and row_of[2] in cite[row_of[0]].indices  # seed 0 puts items 0 and 2 in train

    # coread: brute-force co-reader counts for a few train items
    libraries = [set(ids) for ids in _dat(citeulike_root, "users.dat")]
    coread = citeulike.graphs["coread"].matrix
    for item in train_ids[:: len(train_ids) // 5][:5].tolist():
        shared = collections.Counter(j for lib in libraries if item in lib for j in lib if j != item and j in row_of)
        ranked = sorted(((n, j) for j, n in shared.items() if n >= 2), key=lambda p: (-p[0], p[1]))[:10]
        row = coread[row_of[item]]
        assert sorted(zip(row.indices.tolist(), row.data.tolist())) == sorted((row_of[j], float(n)) for n, j in ranked)


def test_citeulike_all_anchors(citeulike_root):
    data = load_citeulike(citeulike_root.parent, anchors="all")
    titles = read_texts(citeulike_root / "citeutitles.txt")
    row_of = {int(item): row for row, item in enumerate(data.extras["train_item_ids"])}
    assert data.graphs["citation"].anchor_texts == titles
    assert data.graphs["citation"].matrix[row_of[0]].indices.tolist() == [2, 485, 3284]
    with pytest.raises(ValueError, match="anchors"):
        load_citeulike(citeulike_root.parent, anchors="test")


def test_citeulike_dataset_and_round_trip(tmp_path, citeulike):
    ds = citeulike.test.to_dataset()
    assert ds.column_names == ["text", "label_ids", "point_id"] and len(ds) == len(citeulike.test)
    assert ds[5]["text"] == citeulike.test.texts[5]
    assert ds[5]["label_ids"] == citeulike.test.labels[5].indices.tolist()

    back = load_xc_repository(write_xc_repository(citeulike, tmp_path / "citeulike"), name=citeulike.name)
    assert back.train.texts == citeulike.train.texts and back.test.texts == citeulike.test.texts
    assert back.label_texts == citeulike.label_texts and back.filter_pairs is None
    assert (back.train.labels != citeulike.train.labels).nnz == 0
    assert (back.test.labels != citeulike.test.labels).nnz == 0
    assert sorted(back.graphs) == ["citation", "coread"]
    for key, graph in citeulike.graphs.items():
        assert back.graphs[key].anchor_texts == graph.anchor_texts
        assert back.graphs[key].matrix.shape == graph.matrix.shape
        assert (back.graphs[key].matrix != graph.matrix).nnz == 0
    assert back.summary() == dict(citeulike.summary(), name=citeulike.name)


def test_citeulike_count_mismatch_is_reported(tmp_path, citeulike_root):
    root = tmp_path / "citeulike-a"
    root.mkdir()
    for name in ("citeutitles.txt", "tags.dat", "citations.dat", "users.dat"):
        (root / name).symlink_to(citeulike_root / name)
    lines = (citeulike_root / "item-tag.dat").read_text().splitlines()
    lines[2] = "3 1 2"
    (root / "item-tag.dat").write_text("\n".join(lines))
    with pytest.raises(XCFormatError, match=r"item-tag\.dat, line 3: the line starts with count 3 but 2 ids follow"):
        load_citeulike(tmp_path)


def test_head_slices_points_graph_rows_and_filter_pairs():
    import scipy.sparse as sp

    from hf_compress.ramen.data import MetadataGraph, XCData, XCSplit

    labels = sp.csr_matrix(np.eye(4, 3, dtype=np.float32))
    graph = MetadataGraph("g", sp.csr_matrix(np.ones((4, 2), dtype=np.float32)), ["a", "b"])
    other = MetadataGraph("h", sp.csr_matrix((4, 1), dtype=np.float32), ["c"])
    data = XCData("toy", XCSplit(list("wxyz"), labels), XCSplit(list("wxyz"), labels), ["l0", "l1", "l2"],
                  graphs={"g": graph, "h": other}, filter_pairs=np.array([[0, 1], [3, 2]]))
    head = data.head(num_train=2, num_test=3, graphs=["g"])
    assert head.train.texts == ["w", "x"] and len(head.test) == 3 and head.label_texts == data.label_texts
    assert list(head.graphs) == ["g"] and head.graphs["g"].matrix.shape == (2, 2)
    assert head.filter_pairs.tolist() == [[0, 1]]  # the pair of test row 3 went with the row
    assert data.head().summary() == data.summary()
