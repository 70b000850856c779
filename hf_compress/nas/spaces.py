"""The two DCA-NAS search spaces as data (DARTS and NAS-Bench-201) and their genotypes.

Nothing here needs torch: the config, the cost model, the benchmark table and the supernet all read the
same ``SearchSpace`` objects. Genotype strings use the forms the original projects print:

* NAS-Bench-201: ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``
  (node ``j`` = 1, 2, 3 listed in order, each with one ``op~i`` per input node ``i < j``).
* DARTS: ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...],
  reduce_concat=range(2, 6))`` (the ``repr`` of the DARTS namedtuple); parsed with ``ast`` (never ``eval``).

This file is copied next to saved models (it is imported by the modeling code): keep it stdlib-only and
its imports relative to this folder.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

NB201 = "nb201"
DARTS = "darts"

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# NB201: nodes 0..3, node 0 is the cell input, node 3 its output; every edge i -> j (i < j) carries one op.
NB201_NUM_NODES = 4
NB201_EDGES = tuple((i, j) for j in range(1, NB201_NUM_NODES) for i in range(j))  # (0,1),(0,2),(1,2),(0,3),(1,3),(2,3)

# DARTS: states 0 and 1 are the two cell inputs (c_{k-2}, c_{k-1}); intermediate node n (0..3) is state n + 2
# and may read any earlier state; the derived cell keeps 2 of them. Output: concat of intermediate nodes.
DARTS_NUM_NODES = 4
DARTS_INPUTS_PER_NODE = 2
DARTS_EDGES = tuple((i, n + 2) for n in range(DARTS_NUM_NODES) for i in range(n + 2))  # 14 candidate edges


@dataclass(frozen=True)
class SearchSpace:
    """One search space: its candidate ops, cell topology and the default network skeleton.

    ``edges`` lists every candidate edge ``(source_state, target_state)`` of one cell in the canonical
    order (the order of the genotype strings / DARTS alpha rows); a supernet holds one mixed op per edge.
    ``inputs_per_node`` is how many incoming edges a derived cell keeps per node (``None``: all of them).
    """

    name: str
    ops: tuple[str, ...]
    num_nodes: int
    edges: tuple[tuple[int, int], ...]
    inputs_per_node: int | None
    cell_types: tuple[str, ...]
    num_cell_inputs: int
    # network skeleton: evaluation (the network that is trained and shipped) and search (the supernet)
    init_channels: int
    search_init_channels: int
    num_layers: int | None = None          # DARTS: total number of cells (reductions at L//3 and 2L//3)
    search_num_layers: int | None = None
    cells_per_stage: int | None = None     # NB201: N cells per stage; 3 stages joined by residual blocks
    num_stages: int = 3
    stem_multiplier: int = 1               # stem width = stem_multiplier * init_channels
    description: str = field(default="", compare=False)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def op_index(self, name: str) -> int:
        check_op(self, name)
        return self.ops.index(name)

    def incoming_edges(self, target: int) -> list[int]:
        """Indices into ``edges`` of the candidate edges that end in state ``target``."""
        return [k for k, (_, j) in enumerate(self.edges) if j == target]

    def reduction_layers(self, num_layers: int | None = None) -> tuple[int, ...]:
        """DARTS: indices of the reduction cells in a network of ``num_layers`` cells (L//3 and 2L//3)."""
        if self.name != DARTS:
            raise ValueError(f"reduction_layers applies to the DARTS space, not {self.name!r}.")
        layers = self.num_layers if num_layers is None else num_layers
        return tuple(sorted({layers // 3, 2 * layers // 3}))


NB201_SPACE = SearchSpace(
    name=NB201,
    ops=NB201_OPS,
    num_nodes=NB201_NUM_NODES,
    edges=NB201_EDGES,
    inputs_per_node=None,
    cell_types=("normal",),
    num_cell_inputs=1,
    init_channels=16,
    search_init_channels=16,
    cells_per_stage=5,
    num_stages=3,
    stem_multiplier=1,
    description="NAS-Bench-201: 4-node cell, 6 edges, 5 ops (15,625 cells); C=16, N=5, 3 stages.",
)

DARTS_SPACE = SearchSpace(
    name=DARTS,
    ops=DARTS_OPS,
    num_nodes=DARTS_NUM_NODES,
    edges=DARTS_EDGES,
    inputs_per_node=DARTS_INPUTS_PER_NODE,
    cell_types=("normal", "reduce"),
    num_cell_inputs=2,
    init_channels=36,
    search_init_channels=16,
    num_layers=20,
    search_num_layers=8,
    stem_multiplier=3,
    description="DARTS: normal + reduction cells, 4 intermediate nodes with 2 inputs each, 8 ops; "
    "C=36 / 20 cells for evaluation, C=16 / 8 cells for search.",
)

SPACES = {NB201: NB201_SPACE, DARTS: DARTS_SPACE}
_ALIASES = {
    "nb201": NB201, "nasbench201": NB201, "nas-bench-201": NB201, "nas_bench_201": NB201, "nasbench-201": NB201,
    "darts": DARTS,
}


def get_space(space: str | SearchSpace) -> SearchSpace:
    """The ``SearchSpace`` named ``space`` ('nb201' / 'darts', a few aliases accepted)."""
    if isinstance(space, SearchSpace):
        return space
    key = _ALIASES.get(str(space).strip().lower())
    if key is None:
        raise ValueError(f"Unknown search space {space!r}; choose from {sorted(SPACES)}.")
    return SPACES[key]


def check_op(space: str | SearchSpace, name: str, where: str = "") -> str:
    space = get_space(space)
    if name not in space.ops:
        at = f" ({where})" if where else ""
        raise ValueError(f"Unknown {space.name} op {name!r}{at}; valid ops: {', '.join(space.ops)}.")
    return name


# ---------------------------------------------------------------------------------------------------------
# NAS-Bench-201 genotype
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: ``nodes[j - 1]`` holds ``(op, input_node)`` for node ``j`` = 1, 2, 3.

    Inputs of node ``j`` are exactly ``0 .. j-1``, each once, stored in that order.
    """

    nodes: tuple[tuple[tuple[str, int], ...], ...]

    def __post_init__(self) -> None:
        nodes = tuple(tuple((str(op), int(i)) for op, i in node) for node in self.nodes)
        if len(nodes) != NB201_NUM_NODES - 1:
            raise ValueError(
                f"A NAS-Bench-201 cell has {NB201_NUM_NODES - 1} computed nodes (6 edges); got {len(nodes)} nodes."
            )
        ordered = []
        for j, node in enumerate(nodes, start=1):
            inputs = sorted(i for _, i in node)
            if inputs != list(range(j)):
                raise ValueError(
                    f"NAS-Bench-201 node {j} must have exactly one edge from each of nodes {list(range(j))}; "
                    f"got inputs {[i for _, i in node]}."
                )
            for op, i in node:
                check_op(NB201_SPACE, op, f"node {j}, input {i}")
            ordered.append(tuple(sorted(node, key=lambda edge: edge[1])))
        object.__setattr__(self, "nodes", tuple(ordered))

    @classmethod
    def from_ops(cls, ops) -> NB201Genotype:
        """From the 6 op names in canonical edge order (0->1, 0->2, 1->2, 0->3, 1->3, 2->3)."""
        ops = list(ops)
        if len(ops) != len(NB201_EDGES):
            raise ValueError(f"A NAS-Bench-201 cell has {len(NB201_EDGES)} edges; got {len(ops)} ops: {ops}.")
        nodes = [[] for _ in range(NB201_NUM_NODES - 1)]
        for (i, j), op in zip(NB201_EDGES, ops):
            nodes[j - 1].append((op, i))
        return cls(tuple(tuple(node) for node in nodes))

    @property
    def ops(self) -> tuple[str, ...]:
        """Op names in canonical edge order (the order of ``SearchSpace.edges``)."""
        return tuple(op for _, _, op in self.edges())

    def edges(self) -> list[tuple[int, int, str]]:
        """``(source, target, op)`` for the 6 edges, in canonical order."""
        return [(i, j, op) for j, node in enumerate(self.nodes, start=1) for op, i in node]

    def to_string(self) -> str:
        return "|" + "|+|".join("|".join(f"{op}~{i}" for op, i in node) for node in self.nodes) + "|"

    __str__ = to_string

    @classmethod
    def parse(cls, text: str) -> NB201Genotype:
        if not isinstance(text, str):
            raise ValueError(f"A NAS-Bench-201 genotype string is expected, got {type(text).__name__}.")
        s = text.strip()
        example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        if not (s.startswith("|") and s.endswith("|")):
            raise ValueError(
                f"Malformed NAS-Bench-201 genotype {text!r}: it must start and end with '|' (e.g. {example})."
            )
        parts = s.split("+")
        if len(parts) != NB201_NUM_NODES - 1:
            raise ValueError(
                f"Malformed NAS-Bench-201 genotype {text!r}: expected {NB201_NUM_NODES - 1} nodes separated by '+', "
                f"found {len(parts)}."
            )
        nodes, offset = [], 0
        for j, part in enumerate(parts, start=1):
            where = f"node {j} at characters {offset}-{offset + len(part)} ({part!r})"
            offset += len(part) + 1
            if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
                raise ValueError(f"Malformed NAS-Bench-201 genotype {text!r}: {where} must be written '|op~i|...|'.")
            tokens = part[1:-1].split("|")
            if len(tokens) != j:
                raise ValueError(
                    f"NAS-Bench-201 genotype {text!r}: {where} has {len(tokens)} edges, node {j} needs {j} "
                    f"(one from each earlier node)."
                )
            node = []
            for token in tokens:
                op, sep, index = token.partition("~")
                if not sep or not index.isdigit():
                    raise ValueError(
                        f"Malformed NAS-Bench-201 genotype {text!r}: edge {token!r} in {where} must be 'op~input'."
                    )
                check_op(NB201_SPACE, op, f"edge {token!r} in {where}")
                node.append((op, int(index)))
            if [i for _, i in node] != list(range(j)):
                raise ValueError(
                    f"NAS-Bench-201 genotype {text!r}: {where} must list inputs {list(range(j))} in order, "
                    f"got {[i for _, i in node]}."
                )
            nodes.append(tuple(node))
        return cls(tuple(nodes))


# ---------------------------------------------------------------------------------------------------------
# DARTS genotype
# ---------------------------------------------------------------------------------------------------------


def _concat_repr(concat: tuple[int, ...]) -> str:
    if len(concat) > 1 and list(concat) == list(range(concat[0], concat[-1] + 1)):
        return f"range({concat[0]}, {concat[-1] + 1})"
    return "[" + ", ".join(str(i) for i in concat) + "]"


@dataclass(frozen=True)
class DartsGenotype:
    """A DARTS architecture: per cell type, ``2 * 4`` ``(op, input_state)`` pairs (two per intermediate
    node, node ``n`` reading states ``< n + 2``) and the states concatenated into the cell output."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            edges = getattr(self, kind)
            try:
                edges = tuple((str(op), int(i)) for op, i in edges)
            except (TypeError, ValueError) as err:
                raise ValueError(f"DARTS genotype {kind}: expected (op, input) pairs, got {edges!r}.") from err
            expected = DARTS_NUM_NODES * DARTS_INPUTS_PER_NODE
            if len(edges) != expected:
                raise ValueError(
                    f"DARTS genotype {kind}: expected {expected} (op, input) pairs ({DARTS_INPUTS_PER_NODE} per "
                    f"node x {DARTS_NUM_NODES} nodes), got {len(edges)}."
                )
            for k, (op, i) in enumerate(edges):
                node = k // DARTS_INPUTS_PER_NODE
                check_op(DARTS_SPACE, op, f"{kind}[{k}]")
                if not 0 <= i < node + 2:
                    raise ValueError(
                        f"DARTS genotype {kind}[{k}] = ({op!r}, {i}): node {node} (state {node + 2}) can only read "
                        f"states 0..{node + 1}."
                    )
            object.__setattr__(self, kind, edges)
            concat_name = f"{kind}_concat"
            concat = tuple(int(i) for i in getattr(self, concat_name))
            valid = range(2, DARTS_NUM_NODES + 2)
            if not concat or len(set(concat)) != len(concat) or any(i not in valid for i in concat):
                raise ValueError(
                    f"DARTS genotype {concat_name}={list(concat)}: expected distinct intermediate states from "
                    f"{list(valid)} (usually range(2, 6))."
                )
            object.__setattr__(self, concat_name, concat)

    def cell(self, reduction: bool) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        """``(edges, concat)`` of the reduction or the normal cell."""
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def to_string(self) -> str:
        def edges(pairs):
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in pairs) + "]"

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={_concat_repr(self.normal_concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={_concat_repr(self.reduce_concat)})"
        )

    __str__ = to_string

    @classmethod
    def parse(cls, text: str) -> DartsGenotype:
        return _DartsParser(text).parse()


_DARTS_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class _DartsParser:
    """``Genotype(...)`` -> DartsGenotype through Python's ``ast`` (syntax only; nothing is evaluated).

    Accepted values: lists / tuples of ``('op', int)`` pairs; concat as ``range(a, b)`` or a list of ints.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"A DARTS genotype string is expected, got {type(text).__name__}.")
        self.text = text

    def fail(self, node: ast.AST | None, message: str) -> ValueError:
        at = f" at column {node.col_offset + 1}" if node is not None and hasattr(node, "col_offset") else ""
        return ValueError(f"Malformed DARTS genotype{at}: {message} (in {self.text.strip()!r}).")

    def parse(self) -> DartsGenotype:
        source = self.text.strip()
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as err:
            raise ValueError(
                f"Malformed DARTS genotype at column {err.offset}: {err.msg} (in {source!r})."
            ) from None
        call = tree.body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
            raise self.fail(call, "expected Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)")
        if len(call.args) > len(_DARTS_FIELDS):
            raise self.fail(call, f"Genotype takes {len(_DARTS_FIELDS)} fields, got {len(call.args)} positional values")
        values: dict[str, ast.AST] = dict(zip(_DARTS_FIELDS, call.args))
        for keyword in call.keywords:
            if keyword.arg not in _DARTS_FIELDS:
                raise self.fail(keyword.value, f"unknown field {keyword.arg!r}; fields are {', '.join(_DARTS_FIELDS)}")
            if keyword.arg in values:
                raise self.fail(keyword.value, f"field {keyword.arg!r} given twice")
            values[keyword.arg] = keyword.value
        missing = [name for name in _DARTS_FIELDS if name not in values]
        if missing:
            raise self.fail(call, f"missing field(s) {', '.join(missing)}")
        return DartsGenotype(
            normal=self.edges(values["normal"], "normal"),
            normal_concat=self.concat(values["normal_concat"], "normal_concat"),
            reduce=self.edges(values["reduce"], "reduce"),
            reduce_concat=self.concat(values["reduce_concat"], "reduce_concat"),
        )

    def integer(self, node: ast.AST, what: str) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise self.fail(node, f"{what} must be an integer literal")

    def edges(self, node: ast.AST, name: str) -> list[tuple[str, int]]:
        if not isinstance(node, (ast.List, ast.Tuple)):
            raise self.fail(node, f"{name} must be a list of ('op', input) pairs")
        pairs = []
        for k, item in enumerate(node.elts):
            if not (isinstance(item, ast.Tuple) and len(item.elts) == 2):
                raise self.fail(item, f"{name}[{k}] must be a pair ('op', input)")
            op_node, index_node = item.elts
            if not (isinstance(op_node, ast.Constant) and isinstance(op_node.value, str)):
                raise self.fail(op_node, f"{name}[{k}]: the op must be a quoted name")
            op = op_node.value
            if op not in DARTS_OPS:
                raise self.fail(op_node, f"{name}[{k}]: unknown DARTS op {op!r}; valid ops: {', '.join(DARTS_OPS)}")
            pairs.append((op, self.integer(index_node, f"{name}[{k}] input")))
        return pairs

    def concat(self, node: ast.AST, name: str) -> list[int]:
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.integer(item, f"{name} entry") for item in node.elts]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            if node.keywords or not 1 <= len(node.args) <= 2:
                raise self.fail(node, f"{name}: expected range(start, stop)")
            bounds = [self.integer(arg, f"{name} range bound") for arg in node.args]
            return list(range(*bounds))
        raise self.fail(node, f"{name} must be range(a, b) or a list of integers")


# The published DARTS (second order) CIFAR-10 cell (Liu et al., ICLR 2019; 3.3M params at C=36, 20 cells).
DARTS_V2 = DartsGenotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)

# NB201 reference cells: every edge a 3x3 conv (the largest cell) and every edge empty (the smallest).
NB201_LARGEST = NB201Genotype.from_ops(["nor_conv_3x3"] * len(NB201_EDGES))
NB201_SMALLEST = NB201Genotype.from_ops(["none"] * len(NB201_EDGES))

DEFAULT_GENOTYPES = {NB201: NB201_LARGEST, DARTS: DARTS_V2}

Genotype = NB201Genotype | DartsGenotype


def parse_genotype(text: str | NB201Genotype | DartsGenotype, space: str | SearchSpace | None = None) -> Genotype:
    """Parse either string form (recognised by its shape); with ``space`` given, also check it matches."""
    if isinstance(text, (NB201Genotype, DartsGenotype)):
        genotype = text
    elif hasattr(text, "to_string") and callable(text.to_string):  # a genotype from another copy of this module
        return parse_genotype(text.to_string(), space)
    elif not isinstance(text, str):
        raise ValueError(f"A genotype string or genotype object is expected, got {type(text).__name__}.")
    elif text.strip().startswith("|"):
        genotype = NB201Genotype.parse(text)
    elif text.strip().startswith("Genotype"):
        genotype = DartsGenotype.parse(text)
    else:
        raise ValueError(
            f"Unrecognised genotype {text!r}: expected a NAS-Bench-201 string '|op~0|+|op~0|op~1|+|...|' "
            "or a DARTS 'Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)'."
        )
    if space is not None:
        expected = get_space(space).name
        actual = NB201 if isinstance(genotype, NB201Genotype) else DARTS
        if expected != actual:
            raise ValueError(f"The genotype is a {actual} genotype but the search space is {expected!r}: {genotype}.")
    return genotype


def genotype_space(genotype: Genotype) -> SearchSpace:
    return NB201_SPACE if isinstance(genotype, NB201Genotype) else DARTS_SPACE
