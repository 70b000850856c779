"""Candidate operations of the DARTS and NAS-Bench-201 spaces as ``nn.Module``s.

Every op is built as ``OPS[space][name](C_in, C_out, stride, affine=True, track_running_stats=True)``.
``C_in`` may differ from ``C_out`` (a channel bottleneck or a reduction): convolutions map channels
directly; ops that cannot (pools, identity) get a 1x1 ReLU-Conv-BN in front (the NAS-Bench-201 convention)
and a strided identity becomes a ``FactorizedReduce``. All ops keep the spatial size at stride 1 and give
``ceil(H / 2)`` at stride 2, so the outputs of every candidate on an edge can be summed.

Convolutions have no bias (a BatchNorm follows each of them). ``cost.py`` holds the closed-form params /
MACs of every op; keep the two files in step.

This file is copied next to saved models (it is imported by the modeling code): keep it torch-only and its
imports relative to this folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spaces import DARTS, NB201


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k, stride, padding, dilation) -> BatchNorm (NAS-Bench-201 ``nor_conv``, DARTS preprocessing)."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(hidden_states)))


class DilConv(nn.Module):
    """ReLU -> depthwise dilated conv (C_in, stride) -> pointwise conv (C_in -> C_out) -> BatchNorm."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False
        )
        self.pointwise = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(F.relu(hidden_states))))


class SepConv(nn.Module):
    """DARTS separable conv: two stacked depthwise-separable blocks; only the first is strided and only the
    last changes the channel count (C_in -> C_in, then C_in -> C_out)."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.block1 = DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine, track_running_stats)
        self.block2 = DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine, track_running_stats)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(hidden_states))


class FactorizedReduce(nn.Module):
    """Identity with a channel change and/or stride 2 (skip_connect at a reduction).

    Stride 2: ReLU, then two 1x1 stride-2 convs, the second on the input shifted by one pixel (zero-padded
    at the bottom/right so odd sizes work), concatenated to C_out channels, then BatchNorm.
    Stride 1: ReLU -> 1x1 conv -> BatchNorm.
    """

    def __init__(
        self, C_in: int, C_out: int, stride: int = 2, affine: bool = True, track_running_stats: bool = True
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FactorizedReduce supports stride 1 or 2, got {stride}.")
        self.stride = stride
        if stride == 2:
            if C_out < 2:
                raise ValueError(f"FactorizedReduce at stride 2 needs C_out >= 2, got {C_out}.")
            self.convs = nn.ModuleList(
                [
                    nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False),
                    nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False),
                ]
            )
        else:
            self.convs = nn.ModuleList([nn.Conv2d(C_in, C_out, 1, stride=1, bias=False)])
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(hidden_states)
        if self.stride == 2:
            shifted = F.pad(hidden_states, (0, 1, 0, 1))[:, :, 1:, 1:]
            out = torch.cat([self.convs[0](hidden_states), self.convs[1](shifted)], dim=1)
        else:
            out = self.convs[0](hidden_states)
        return self.bn(out)


class Pool(nn.Module):
    """3x3 average (padding excluded from the mean) or max pooling.

    ``C_in != C_out`` puts a 1x1 ReLU-Conv-BN (stride 1) in front. ``bn=True`` adds a non-affine BatchNorm
    after the pool: the DARTS search convention (its mixed ops normalise pool outputs like the conv ops').
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        stride: int,
        mode: str,
        affine: bool = True,
        track_running_stats: bool = True,
        bn: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"Pool mode must be 'avg' or 'max', got {mode!r}.")
        self.preprocess = (
            ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats) if C_in != C_out else None
        )
        if mode == "avg":
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(C_out, affine=False, track_running_stats=track_running_stats) if bn else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            hidden_states = self.preprocess(hidden_states)
        hidden_states = self.pool(hidden_states)
        return self.bn(hidden_states) if self.bn is not None else hidden_states


class Identity(nn.Identity):
    """skip_connect at stride 1 with C_in == C_out (a distinct class so drop-path can skip it)."""


class Zero(nn.Module):
    """The ``none`` op: zeros of shape [batch, C_out, ceil(H / stride), ceil(W / stride)]."""

    def __init__(self, C_in: int, C_out: int, stride: int) -> None:
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        sampled = hidden_states[:, :, :: self.stride, :: self.stride]
        if self.C_in == self.C_out:
            return sampled.mul(0.0)
        batch_size, _, height, width = sampled.shape
        return sampled.new_zeros(batch_size, self.C_out, height, width)

    def extra_repr(self) -> str:
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201 reduction block between stages: two ReLU-Conv-BN 3x3 (first strided) plus a shortcut
    (stride 2: 2x2 average pool then 1x1 conv, no norm; same size and width: identity)."""

    def __init__(
        self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True
    ) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, 1, affine, track_running_stats)
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0), nn.Conv2d(C_in, C_out, 1, bias=False)
            )
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats)
        else:
            self.downsample = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states if self.downsample is None else self.downsample(hidden_states)
        return residual + self.conv_b(self.conv_a(hidden_states))


def _skip(C_in, C_out, stride, affine=True, track_running_stats=True):
    if stride == 1 and C_in == C_out:
        return Identity()
    return FactorizedReduce(C_in, C_out, stride, affine, track_running_stats)


OPS = {
    NB201: {
        "none": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Zero(C_in, C_out, stride),
        "skip_connect": _skip,
        "nor_conv_1x1": lambda C_in, C_out, stride, affine=True, track_running_stats=True: ReLUConvBN(
            C_in, C_out, 1, stride, 0, 1, affine, track_running_stats
        ),
        "nor_conv_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: ReLUConvBN(
            C_in, C_out, 3, stride, 1, 1, affine, track_running_stats
        ),
        "avg_pool_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Pool(
            C_in, C_out, stride, "avg", affine, track_running_stats
        ),
    },
    DARTS: {
        "none": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Zero(C_in, C_out, stride),
        "max_pool_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Pool(
            C_in, C_out, stride, "max", affine, track_running_stats
        ),
        "avg_pool_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Pool(
            C_in, C_out, stride, "avg", affine, track_running_stats
        ),
        "skip_connect": _skip,
        "sep_conv_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: SepConv(
            C_in, C_out, 3, stride, 1, affine, track_running_stats
        ),
        "sep_conv_5x5": lambda C_in, C_out, stride, affine=True, track_running_stats=True: SepConv(
            C_in, C_out, 5, stride, 2, affine, track_running_stats
        ),
        "dil_conv_3x3": lambda C_in, C_out, stride, affine=True, track_running_stats=True: DilConv(
            C_in, C_out, 3, stride, 2, 2, affine, track_running_stats
        ),
        "dil_conv_5x5": lambda C_in, C_out, stride, affine=True, track_running_stats=True: DilConv(
            C_in, C_out, 5, stride, 4, 2, affine, track_running_stats
        ),
    },
}


def build_op(
    space: str,
    name: str,
    C_in: int,
    C_out: int,
    stride: int = 1,
    affine: bool = True,
    track_running_stats: bool = True,
    search: bool = False,
) -> nn.Module:
    """``OPS[space][name](...)`` with a clear error for unknown names; ``search=True`` applies the DARTS
    search convention of a non-affine BatchNorm after pools (nothing changes for NAS-Bench-201)."""
    if space not in OPS:
        raise ValueError(f"Unknown search space {space!r}; choose from {sorted(OPS)}.")
    if name not in OPS[space]:
        raise ValueError(f"Unknown {space} op {name!r}; valid ops: {', '.join(OPS[space])}.")
    if stride not in (1, 2):
        raise ValueError(f"Ops support stride 1 or 2, got {stride}.")
    if search and space == DARTS and name.endswith("pool_3x3"):
        return Pool(C_in, C_out, stride, name[:3], affine, track_running_stats, bn=True)
    return OPS[space][name](C_in, C_out, stride, affine, track_running_stats)


def drop_path(hidden_states: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest by ``1 / (1 - drop_prob)``."""
    if drop_prob <= 0.0:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(hidden_states.shape[0], 1, 1, 1, dtype=hidden_states.dtype, device=hidden_states.device)
    mask = mask.bernoulli_(keep_prob)
    return hidden_states / keep_prob * mask
