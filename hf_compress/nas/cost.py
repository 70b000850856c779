"""Exact parameter and MAC counts of the candidate ops and of derived networks, in closed form.

Conventions (those of the NAS-Bench-201 and DARTS papers, whose "FLOPs" columns are these MACs):

* ``params``: trainable parameters (conv / linear weights and biases, affine BatchNorm weight and bias);
  BatchNorm running statistics are buffers and not counted. Equals ``sum(p.numel())`` of the built module.
* ``macs``: multiply-accumulates of convolutions and linear layers for one image (a k x k conv with
  ``C_in / groups`` inputs per output channel costs ``k * k * C_in / groups * C_out * H_out * W_out``; a
  linear layer ``in * out``). Biases, BatchNorm, ReLU, pooling, additions and concatenations are not
  counted. Multiply by 2 for "FLOPs" in the two-operations-per-MAC sense.

The formulas mirror ``ops.py`` and ``modeling_dcanas.py`` module by module: ``network_cost_breakdown``
is keyed by module name, so a test can compare every entry with the built network. ``count_macs`` is an
independent hook-based counter of the same quantity on any built model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .spaces import DARTS, NB201, DartsGenotype, NB201Genotype, SearchSpace, check_op, get_space


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates (per image)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: Cost) -> Cost:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        return Cost(self.params + other.params, self.macs + other.macs)

    __radd__ = __add__

    def __mul__(self, factor: int) -> Cost:
        return Cost(self.params * factor, self.macs * factor)

    __rmul__ = __mul__

    def get(self, metric: str) -> int:
        if metric not in ("params", "macs"):
            raise ValueError(f"Unknown cost metric {metric!r}; choose 'params' or 'macs'.")
        return getattr(self, metric)


ZERO = Cost()


# --------------------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def op_output_size(size: int, stride: int) -> int:
    """Spatial size after any candidate op (all 'same'-padded): ``ceil(size / stride)``."""
    return (size - 1) // stride + 1


def conv_cost(
    C_in: int, C_out: int, kernel_size: int, H: int, W: int, stride: int = 1, padding: int = 0,
    dilation: int = 1, groups: int = 1, bias: bool = False,
) -> tuple[Cost, int, int]:
    """Cost of one ``nn.Conv2d`` on an ``H x W`` input, and its output size."""
    H_out = conv_output_size(H, kernel_size, stride, padding, dilation)
    W_out = conv_output_size(W, kernel_size, stride, padding, dilation)
    weights = C_out * (C_in // groups) * kernel_size * kernel_size
    return Cost(weights + (C_out if bias else 0), weights * H_out * W_out), H_out, W_out


def bn_cost(C: int, affine: bool = True) -> Cost:
    return Cost(2 * C if affine else 0, 0)


def linear_cost(in_features: int, out_features: int, bias: bool = True) -> Cost:
    return Cost(in_features * out_features + (out_features if bias else 0), in_features * out_features)


def relu_conv_bn_cost(
    C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, H: int, W: int,
    dilation: int = 1, affine: bool = True,
) -> Cost:
    conv, _, _ = conv_cost(C_in, C_out, kernel_size, H, W, stride, padding, dilation)
    return conv + bn_cost(C_out, affine)


def dil_conv_cost(
    C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int, H: int, W: int,
    affine: bool = True,
) -> Cost:
    depthwise, H_out, W_out = conv_cost(C_in, C_in, kernel_size, H, W, stride, padding, dilation, groups=C_in)
    pointwise, _, _ = conv_cost(C_in, C_out, 1, H_out, W_out)
    return depthwise + pointwise + bn_cost(C_out, affine)


def sep_conv_cost(
    C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, H: int, W: int, affine: bool = True
) -> Cost:
    first = dil_conv_cost(C_in, C_in, kernel_size, stride, padding, 1, H, W, affine)
    H_out, W_out = op_output_size(H, stride), op_output_size(W, stride)
    return first + dil_conv_cost(C_in, C_out, kernel_size, 1, padding, 1, H_out, W_out, affine)


def factorized_reduce_cost(C_in: int, C_out: int, stride: int, H: int, W: int, affine: bool = True) -> Cost:
    if stride == 2:
        half, _, _ = conv_cost(C_in, C_out // 2, 1, H, W, 2)
        rest, _, _ = conv_cost(C_in, C_out - C_out // 2, 1, H, W, 2)
        return half + rest + bn_cost(C_out, affine)
    conv, _, _ = conv_cost(C_in, C_out, 1, H, W)
    return conv + bn_cost(C_out, affine)


def pool_cost(C_in: int, C_out: int, H: int, W: int, affine: bool = True) -> Cost:
    """A pool costs nothing; with ``C_in != C_out`` its 1x1 ReLU-Conv-BN preprocessing does (the search-time
    BatchNorm after DARTS pools is non-affine: no parameters)."""
    return relu_conv_bn_cost(C_in, C_out, 1, 1, 0, H, W, affine=affine) if C_in != C_out else ZERO


def skip_cost(C_in: int, C_out: int, stride: int, H: int, W: int, affine: bool = True) -> Cost:
    return ZERO if stride == 1 and C_in == C_out else factorized_reduce_cost(C_in, C_out, stride, H, W, affine)


def resnet_block_cost(C_in: int, C_out: int, stride: int, H: int, W: int, affine: bool = True) -> Cost:
    """NAS-Bench-201 residual reduction block (``ops.ResNetBasicBlock``)."""
    cost = relu_conv_bn_cost(C_in, C_out, 3, stride, 1, H, W, affine=affine)
    H_out, W_out = conv_output_size(H, 3, stride, 1), conv_output_size(W, 3, stride, 1)
    cost = cost + relu_conv_bn_cost(C_out, C_out, 3, 1, 1, H_out, W_out, affine=affine)
    if stride == 2:
        shortcut, _, _ = conv_cost(C_in, C_out, 1, H // 2, W // 2)
        cost = cost + shortcut
    elif C_in != C_out:
        cost = cost + relu_conv_bn_cost(C_in, C_out, 1, 1, 0, H, W, affine=affine)
    return cost


# --------------------------------------------------------------------------------------------------------
# candidate ops
# --------------------------------------------------------------------------------------------------------


def op_cost(
    space: str | SearchSpace, name: str, C_in: int, C_out: int, stride: int, H: int, W: int | None = None,
    affine: bool = True,
) -> Cost:
    """Cost of ``OPS[space][name](C_in, C_out, stride, affine)`` on an ``H x W`` input."""
    space = get_space(space).name
    check_op(space, name)
    W = H if W is None else W
    if name == "none":
        return ZERO
    if name == "skip_connect":
        return skip_cost(C_in, C_out, stride, H, W, affine)
    if name.endswith("pool_3x3"):
        return pool_cost(C_in, C_out, H, W, affine)
    if space == NB201:
        kernel = 3 if name == "nor_conv_3x3" else 1
        return relu_conv_bn_cost(C_in, C_out, kernel, stride, kernel // 2, H, W, affine=affine)
    kernel = int(name[-1])
    if name.startswith("sep_conv"):
        return sep_conv_cost(C_in, C_out, kernel, stride, kernel // 2, H, W, affine)
    return dil_conv_cost(C_in, C_out, kernel, stride, kernel - 1, 2, H, W, affine)  # dil_conv: dilation 2


def edge_op_costs(
    space: str | SearchSpace, C_in: int, C_out: int, stride: int, H: int, W: int | None = None,
    affine: bool = True,
) -> dict[str, Cost]:
    """``{op: Cost}`` for every candidate op of one edge (the b(o) of the expected-cost term)."""
    space = get_space(space)
    return {name: op_cost(space, name, C_in, C_out, stride, H, W, affine) for name in space.ops}


# --------------------------------------------------------------------------------------------------------
# cells and networks
# --------------------------------------------------------------------------------------------------------


def nb201_cell_cost(genotype: NB201Genotype, C: int, H: int, W: int | None = None) -> Cost:
    return sum((op_cost(NB201, op, C, C, 1, H, W) for _, _, op in genotype.edges()), ZERO)


def darts_cell_cost(
    edges, concat, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
    H: int, W: int | None = None, H_prev_prev: int | None = None, W_prev_prev: int | None = None,
) -> Cost:
    """A DARTS cell whose ``s1`` input is ``H x W`` (``s0`` is ``H_prev_prev``: twice that after a reduction)."""
    W = H if W is None else W
    H_pp = H_prev_prev if H_prev_prev is not None else (2 * H if reduction_prev else H)
    W_pp = W_prev_prev if W_prev_prev is not None else (2 * W if reduction_prev else W)
    if reduction_prev:
        cost = factorized_reduce_cost(C_prev_prev, C, 2, H_pp, W_pp)
    else:
        cost = relu_conv_bn_cost(C_prev_prev, C, 1, 1, 0, H_pp, W_pp)
    cost = cost + relu_conv_bn_cost(C_prev, C, 1, 1, 0, H, W)
    H_out, W_out = (op_output_size(H, 2), op_output_size(W, 2)) if reduction else (H, W)
    for name, index in edges:
        stride = 2 if reduction and index < 2 else 1
        H_in, W_in = (H, W) if index < 2 else (H_out, W_out)
        cost = cost + op_cost(DARTS, name, C, C, stride, H_in, W_in)
    return cost


def nb201_network_cost_breakdown(
    genotype: NB201Genotype | str, init_channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
    image_size: int = 32, num_channels: int = 3,
) -> dict[str, Cost]:
    """Per-module costs of the NAS-Bench-201 network, keyed like ``DCANASForImageClassification``'s modules."""
    if isinstance(genotype, str):
        genotype = NB201Genotype.parse(genotype)
    C, H = init_channels, image_size
    stem, _, _ = conv_cost(num_channels, C, 3, H, H, 1, 1)
    parts = {"model.stem": stem + bn_cost(C)}
    k, C_prev = 0, C
    for stage in range(3):
        C_stage = C * 2**stage
        if stage > 0:
            parts[f"model.cells.{k}"] = resnet_block_cost(C_prev, C_stage, 2, H, H)
            H, k = conv_output_size(H, 3, 2, 1), k + 1
        for _ in range(cells_per_stage):
            parts[f"model.cells.{k}"] = nb201_cell_cost(genotype, C_stage, H, H)
            k += 1
        C_prev = C_stage
    parts["model.final_norm"] = bn_cost(C_prev)
    parts["classifier"] = linear_cost(C_prev, num_classes)
    return parts


def darts_network_cost_breakdown(
    genotype: DartsGenotype | str, init_channels: int = 36, num_layers: int = 20, num_classes: int = 10,
    image_size: int = 32, num_channels: int = 3, stem_multiplier: int = 3, auxiliary: bool = False,
) -> dict[str, Cost]:
    """Per-module costs of the DARTS CIFAR network (``auxiliary``: include the auxiliary head)."""
    if isinstance(genotype, str):
        genotype = DartsGenotype.parse(genotype)
    C, H = init_channels, image_size
    C_curr = stem_multiplier * C
    stem, _, _ = conv_cost(num_channels, C_curr, 3, H, H, 1, 1)
    parts = {"model.stem": stem + bn_cost(C_curr)}
    C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
    H_prev_prev, reduction_prev = H, False
    reductions = set(get_space(DARTS).reduction_layers(num_layers))
    auxiliary_channels = auxiliary_size = None
    for i in range(num_layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        edges, concat = genotype.cell(reduction)
        parts[f"model.cells.{i}"] = darts_cell_cost(
            edges, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, H, H, H_prev_prev, H_prev_prev
        )
        H_prev_prev, H = H, (op_output_size(H, 2) if reduction else H)
        C_prev_prev, C_prev = C_prev, len(concat) * C_curr
        reduction_prev = reduction
        if i == 2 * num_layers // 3:
            auxiliary_channels, auxiliary_size = C_prev, H
    if auxiliary and auxiliary_channels is not None:
        pooled = conv_output_size(auxiliary_size, 5, 3, 0)
        conv1, _, _ = conv_cost(auxiliary_channels, 128, 1, pooled, pooled)
        conv2, _, _ = conv_cost(128, 768, 2, pooled, pooled)
        parts["auxiliary_head"] = conv1 + bn_cost(128) + conv2 + bn_cost(768) + linear_cost(768, num_classes)
    parts["classifier"] = linear_cost(C_prev, num_classes)
    return parts


def network_cost_breakdown(config, include_auxiliary: bool | None = None) -> dict[str, Cost]:
    """Per-module costs of ``DCANASForImageClassification(config)`` (a ``DCANASConfig``).

    ``include_auxiliary`` defaults to whether the config has the auxiliary head.
    """
    if config.search_space == NB201:
        return nb201_network_cost_breakdown(
            config.parsed_genotype, config.init_channels, config.cells_per_stage, config.num_labels,
            config.image_size, config.num_channels,
        )
    if include_auxiliary is None:
        include_auxiliary = config.use_auxiliary_head
    return darts_network_cost_breakdown(
        config.parsed_genotype, config.init_channels, config.num_layers, config.num_labels, config.image_size,
        config.num_channels, config.stem_multiplier, include_auxiliary,
    )


def network_cost(config, include_auxiliary: bool = False) -> Cost:
    """Total cost of the derived network. The auxiliary head (DARTS, training only) is left out by default,
    as in the DARTS papers' parameter counts; pass ``include_auxiliary=True`` to match ``numel`` of a model
    built with it."""
    return sum(network_cost_breakdown(config, include_auxiliary).values(), ZERO)


def nb201_network_cost(genotype: NB201Genotype | str, **kwargs) -> Cost:
    """Total cost of the NAS-Bench-201 network (defaults: CIFAR-10, C=16, N=5)."""
    return sum(nb201_network_cost_breakdown(genotype, **kwargs).values(), ZERO)


def darts_network_cost(genotype: DartsGenotype | str, **kwargs) -> Cost:
    """Total cost of the DARTS CIFAR network (defaults: C=36, 20 cells, 10 classes, no auxiliary head)."""
    return sum(darts_network_cost_breakdown(genotype, **kwargs).values(), ZERO)


# --------------------------------------------------------------------------------------------------------
# measured on a built model
# --------------------------------------------------------------------------------------------------------


def count_params(model: nn.Module, exclude: tuple[str, ...] = ()) -> int:
    """``sum(p.numel())`` over parameters whose name does not start with one of ``exclude``."""
    return sum(p.numel() for name, p in model.named_parameters() if not (exclude and name.startswith(exclude)))


@torch.no_grad()
def count_macs(model: nn.Module, pixel_values: torch.Tensor, by_module: bool = False):
    """MACs per image of the conv and linear layers that run in ``model(pixel_values)`` (eval mode),
    counted by forward hooks. ``by_module=True`` also returns ``{module_name: macs}``."""
    counts: dict[str, int] = {}
    batch_size = pixel_values.shape[0]

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_output = (module.in_channels // module.groups) * kh * kw
                macs = per_output * output.numel() // batch_size
            else:
                macs = module.in_features * output.numel() // batch_size
            counts[name] = counts.get(name, 0) + macs

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        model(pixel_values)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total = sum(counts.values())
    return (total, counts) if by_module else total
