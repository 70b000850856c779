"""DCA-NAS search spaces, genotype strings, candidate ops and their closed-form costs."""

from __future__ import annotations

import pytest
import torch

from hf_compress.nas.cost import count_macs, edge_op_costs, op_cost, op_output_size
from hf_compress.nas.ops import OPS, Identity, Pool, Zero, build_op
from hf_compress.nas.spaces import (
    DARTS_OPS,
    DARTS_SPACE,
    DARTS_V2,
    NB201_OPS,
    NB201_SPACE,
    DartsGenotype,
    NB201Genotype,
    get_space,
    parse_genotype,
)

NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

# As printed by the DARTS repository's genotypes.py (lists for concat) and by repr() of its namedtuple (range).
DARTS_V2_PUBLISHED = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_V2_REPR = DARTS_V2_PUBLISHED.replace("[2, 3, 4, 5]", "range(2, 6)")


# ----------------------------------------------------------------------------------------------- spaces


def test_spaces_describe_the_papers():
    assert NB201_SPACE.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert NB201_SPACE.edges == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert NB201_SPACE.num_ops ** NB201_SPACE.num_edges == 15625
    assert (NB201_SPACE.init_channels, NB201_SPACE.cells_per_stage, NB201_SPACE.num_stages) == (16, 5, 3)
    assert len(DARTS_SPACE.ops) == 8 and DARTS_SPACE.num_edges == 14 and DARTS_SPACE.inputs_per_node == 2
    assert (DARTS_SPACE.init_channels, DARTS_SPACE.num_layers) == (36, 20)
    assert (DARTS_SPACE.search_init_channels, DARTS_SPACE.search_num_layers) == (16, 8)
    assert DARTS_SPACE.reduction_layers() == (6, 13) and DARTS_SPACE.reduction_layers(8) == (2, 5)
    assert DARTS_SPACE.incoming_edges(2) == [0, 1] and DARTS_SPACE.incoming_edges(5) == [9, 10, 11, 12, 13]
    assert get_space("NAS-Bench-201") is NB201_SPACE and get_space("darts") is DARTS_SPACE
    with pytest.raises(ValueError, match="Unknown search space 'enas'.*darts.*nb201"):
        get_space("enas")


# -------------------------------------------------------------------------------------- NB201 genotype


def test_nb201_round_trip_and_edge_order():
    genotype = NB201Genotype.parse(NB201_EXAMPLE)
    assert genotype.to_string() == NB201_EXAMPLE == str(genotype)
    assert genotype.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert NB201Genotype.from_ops(genotype.ops) == genotype
    assert [(i, j) for i, j, _ in genotype.edges()] == list(NB201_SPACE.edges)
    assert parse_genotype("  " + NB201_EXAMPLE + "\n") == genotype
    assert parse_genotype(genotype, "nb201") is genotype


@pytest.mark.parametrize(
    "text, message",
    [
        ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"Unknown nb201 op 'conv_3x3'.*valid ops: none, skip_connect"),
        ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
        ("|none~0|+|none~0|none~1|", "expected 3 nodes separated by '\\+', found 2"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 at characters 9-17.*has 1 edges, node 2 needs 2"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", r"node 2 .* must list inputs \[0, 1\] in order"),
        ("|none~0|+|none~0|none:1|+|none~0|none~1|none~2|", "edge 'none:1' .* must be 'op~input'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~x|", "edge 'none~x'"),
        ("|none~0|+|none~0|none~1|+||none~0|none~1|none~2|", "node 3"),
    ],
    ids=["unknown-op", "no-bars", "two-nodes", "short-node", "input-order", "no-tilde", "bad-index", "empty-edge"],
)
def test_nb201_parse_errors_say_where(text, message):
    with pytest.raises(ValueError, match=message):
        NB201Genotype.parse(text)


def test_nb201_constructor_checks_topology():
    with pytest.raises(ValueError, match="6 edges"):
        NB201Genotype.from_ops(["none"] * 5)
    with pytest.raises(ValueError, match=r"node 2 must have exactly one edge from each of nodes \[0, 1\]"):
        NB201Genotype(((("none", 0),), (("none", 0), ("none", 0)), (("none", 0), ("none", 1), ("none", 2))))
    with pytest.raises(ValueError, match="Unknown nb201 op 'sep_conv_3x3'"):
        NB201Genotype.from_ops(["sep_conv_3x3"] + ["none"] * 5)


# -------------------------------------------------------------------------------------- DARTS genotype


def test_darts_round_trips_the_published_v2_genotype():
    from_published = DartsGenotype.parse(DARTS_V2_PUBLISHED)
    assert from_published == DARTS_V2 == DartsGenotype.parse(DARTS_V2_REPR)
    assert str(DARTS_V2) == DARTS_V2_REPR  # the namedtuple repr form, concat as range(2, 6)
    assert DartsGenotype.parse(str(DARTS_V2)) == DARTS_V2
    assert parse_genotype(DARTS_V2_PUBLISHED, "darts") == DARTS_V2
    assert DARTS_V2.cell(True) == (DARTS_V2.reduce, (2, 3, 4, 5))
    # positional fields, tuples and a non-contiguous concat also round-trip
    odd = DartsGenotype.parse(
        "Genotype([('sep_conv_5x5', 1), ('none', 0), ('dil_conv_5x5', 2), ('avg_pool_3x3', 0), ('skip_connect', 3), "
        "('sep_conv_3x3', 0), ('dil_conv_3x3', 4), ('max_pool_3x3', 1)], (2, 4, 5), "
        "(('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('skip_connect', 2), ('skip_connect', 3), "
        "('skip_connect', 1), ('skip_connect', 4), ('skip_connect', 0)), range(2, 6))"
    )
    assert odd.normal_concat == (2, 4, 5) and "normal_concat=[2, 4, 5]" in str(odd)
    assert DartsGenotype.parse(str(odd)) == odd


def _v2_with(old: str, new: str) -> str:
    assert old in DARTS_V2_REPR
    return DARTS_V2_REPR.replace(old, new, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        (_v2_with("'sep_conv_3x3', 0", "'sep_conv_7x7', 0"), r"column 19: normal\[0\]: unknown DARTS op 'sep_conv_7x7'; valid ops: none, max_pool_3x3"),
        (_v2_with("Genotype(", "Genotype(("), "Malformed DARTS genotype at column"),
        (_v2_with("Genotype(", "Genome("), "expected Genotype"),
        (_v2_with(", reduce_concat=range(2, 6)", ""), "missing field.*reduce_concat"),
        (_v2_with("reduce_concat", "reduction_concat"), "unknown field 'reduction_concat'"),
        (_v2_with("('sep_conv_3x3', 0), ", ""), r"normal: expected 8 \(op, input\) pairs .* got 7"),
        (_v2_with("('sep_conv_3x3', 1)", "('sep_conv_3x3', 2)"), r"normal\[1\] = \('sep_conv_3x3', 2\): node 0 .* states 0..1"),
        (_v2_with("range(2, 6)", "range(2, 7)"), "normal_concat=.*distinct intermediate states"),
        (_v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0.5)"), r"normal\[0\] input must be an integer"),
        (_v2_with("('sep_conv_3x3', 0)", "['sep_conv_3x3', 0]"), r"normal\[0\] must be a pair"),
        (_v2_with("range(2, 6)", "__import__('os').getcwd()"), "normal_concat must be range"),
        (_v2_with("('sep_conv_3x3', 0)", "(__import__('os').getcwd(), 0)"), "the op must be a quoted name"),
    ],
    ids=["unknown-op", "syntax", "not-genotype", "missing-field", "unknown-field", "seven-pairs", "bad-input",
         "bad-concat", "float-index", "list-pair", "call-in-concat", "call-as-op"],
)
def test_darts_parse_errors_are_clear_and_nothing_is_evaluated(text, message):
    with pytest.raises(ValueError, match=message):
        DartsGenotype.parse(text)


def test_parse_genotype_dispatch_and_space_checks():
    assert isinstance(parse_genotype(NB201_EXAMPLE), NB201Genotype)
    assert isinstance(parse_genotype(DARTS_V2_REPR), DartsGenotype)
    with pytest.raises(ValueError, match="Unrecognised genotype"):
        parse_genotype("sep_conv_3x3, skip_connect")
    with pytest.raises(ValueError, match="is a nb201 genotype but the search space is 'darts'"):
        parse_genotype(NB201_EXAMPLE, "darts")
    with pytest.raises(ValueError, match="genotype string or genotype object"):
        parse_genotype(42)


# ----------------------------------------------------------------------------------------------- ops

OP_CASES = [
    (space, name, stride, C_in, C_out)
    for space, names in (("nb201", NB201_OPS), ("darts", DARTS_OPS))
    for name in names
    for stride in (1, 2)
    for C_in, C_out in ((6, 6), (4, 10))
]


@pytest.mark.parametrize("space, name, stride, C_in, C_out", OP_CASES)
def test_op_shapes_params_and_macs_match_the_cost_model(space, name, stride, C_in, C_out):
    torch.manual_seed(0)
    op = OPS[space][name](C_in, C_out, stride, True)
    for size in (8, 7):  # odd sizes too: every op gives ceil(size / stride)
        x = torch.randn(2, C_in, size, size + 2)
        out = op.eval()(x)
        assert out.shape == (2, C_out, op_output_size(size, stride), op_output_size(size + 2, stride))
        cost = op_cost(space, name, C_in, C_out, stride, size, size + 2)
        assert cost.params == sum(p.numel() for p in op.parameters())
        assert cost.macs == count_macs(op, x)
    if name == "none":
        assert isinstance(op, Zero) and torch.count_nonzero(out) == 0
    if name == "skip_connect" and stride == 1 and C_in == C_out:
        assert isinstance(op, Identity)
    non_affine = OPS[space][name](C_in, C_out, stride, False, False)
    assert op_cost(space, name, C_in, C_out, stride, 8, affine=False).params == sum(
        p.numel() for p in non_affine.parameters()
    )


def test_build_op_search_convention_and_errors():
    pool = build_op("darts", "max_pool_3x3", 8, 8, 2, affine=False, search=True)
    assert isinstance(pool, Pool) and pool.bn is not None and not pool.bn.affine
    assert build_op("darts", "avg_pool_3x3", 8, 8, 1).bn is None
    assert build_op("nb201", "avg_pool_3x3", 8, 8, 1, search=True).bn is None
    with pytest.raises(ValueError, match="Unknown darts op 'nor_conv_3x3'; valid ops: none, max_pool_3x3"):
        build_op("darts", "nor_conv_3x3", 8, 8)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        build_op("nb201", "nor_conv_3x3", 8, 8, 3)
    costs = edge_op_costs("darts", 16, 16, 1, 32)
    assert list(costs) == list(DARTS_OPS) and costs["none"].params == 0
    assert costs["sep_conv_3x3"].params == 2 * (9 * 16 + 16 * 16 + 2 * 16)
    assert costs["sep_conv_5x5"].macs > costs["sep_conv_3x3"].macs > costs["dil_conv_3x3"].macs
