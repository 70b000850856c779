"""Networks derived by DCA-NAS: a NAS-Bench-201 or DARTS cell stacked into a CIFAR-style classifier.

Module names follow the networks of the original papers so that a weight name says where it lives:

* NAS-Bench-201: ``model.stem.{conv,bn}``, ``model.cells.{k}`` (cells and, between the stages, residual
  ``ResNetBasicBlock``s), ``model.cells.{k}.edges.{e}`` (edge ``e`` in canonical order 0->1, 0->2, 1->2,
  0->3, 1->3, 2->3), ``model.final_norm``, ``classifier``.
* DARTS: ``model.stem.{conv,bn}``, ``model.cells.{k}.preprocess0/1``, ``model.cells.{k}.ops.{e}`` (genotype
  order), ``classifier``, ``auxiliary_head`` (only with ``use_auxiliary_head``).

This file, ``configuration_dcanas.py``, ``ops.py``, ``spaces.py`` and ``image_processing_dcanas.py`` are
copied next to saved models (``register_for_auto_class``): keep their imports relative to this folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

try:
    from transformers import initialization as init
except ImportError:  # transformers < 5 (remote code on older transformers; tests/optimum_env): torch's own
    from torch.nn import init

from .configuration_dcanas import DCANASConfig
from .image_processing_dcanas import default_image_processor
from .ops import FactorizedReduce, Identity, ReLUConvBN, ResNetBasicBlock, Zero, build_op, drop_path
from .spaces import DARTS, NB201, NB201Genotype


@dataclass
class DCANASModelOutput(ModelOutput):
    """``last_hidden_state``: final feature map [batch, C, h, w]; ``pooler_output``: its global average
    [batch, C]; ``hidden_states``: stem and every cell's output (when asked for); ``auxiliary_hidden_state``:
    the DARTS auxiliary head's input (training with ``use_auxiliary_head`` only)."""

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    auxiliary_hidden_state: torch.FloatTensor | None = None


def _sum_edges(terms: list[tuple[nn.Module, torch.Tensor]], drop_prob: float, training: bool) -> torch.Tensor:
    """Sum ``op(input)`` over a node's incoming edges; ``none`` edges are skipped unless all are ``none``."""
    total = None
    live = [(op, x) for op, x in terms if not isinstance(op, Zero)]
    for op, hidden_states in live:
        out = op(hidden_states)
        if training and drop_prob > 0.0 and not isinstance(op, Identity):
            out = drop_path(out, drop_prob)
        total = out if total is None else total + out
    if total is None:  # every incoming edge is `none`: the node is zero (later ops still see it)
        op, hidden_states = terms[0]
        total = op(hidden_states)
    return total


class DCANASStem(nn.Module):
    def __init__(self, num_channels: int, C_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_channels, C_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(pixel_values))


class DCANASNB201Cell(nn.Module):
    """NAS-Bench-201 cell: node 0 = input, node j = sum over i < j of op_ij(node i); output = node 3."""

    def __init__(self, genotype: NB201Genotype, C: int) -> None:
        super().__init__()
        edges = genotype.edges()
        self.edge_nodes = [(i, j) for i, j, _ in edges]
        self.num_nodes = max(j for _, j in self.edge_nodes) + 1
        self.edges = nn.ModuleList([build_op(NB201, op, C, C, 1) for _, _, op in edges])

    def forward(self, hidden_states: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        nodes = [hidden_states]
        for j in range(1, self.num_nodes):
            terms = [(self.edges[k], nodes[i]) for k, (i, jj) in enumerate(self.edge_nodes) if jj == j]
            nodes.append(_sum_edges(terms, drop_prob, self.training))
        return nodes[-1]


class DCANASDartsCell(nn.Module):
    """DARTS cell: inputs c_{k-2}, c_{k-1} preprocessed to C channels (a FactorizedReduce when the previous
    cell reduced), 4 nodes each summing two ops of earlier states, output = concat of ``concat`` states.
    In a reduction cell the ops reading the two inputs have stride 2."""

    def __init__(
        self,
        edges: tuple[tuple[str, int], ...],
        concat: tuple[int, ...],
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, 2)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.inputs = [index for _, index in edges]
        self.ops = nn.ModuleList(
            [build_op(DARTS, name, C, C, 2 if reduction and index < 2 else 1) for name, index in edges]
        )
        self.concat = list(concat)
        self.num_nodes = len(edges) // 2
        self.multiplier = len(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self.num_nodes):
            terms = [(self.ops[k], states[self.inputs[k]]) for k in (2 * node, 2 * node + 1)]
            states.append(_sum_edges(terms, drop_prob, self.training))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DCANASAuxiliaryHead(nn.Module):
    """DARTS CIFAR auxiliary head on the 8x8 map after the second reduction cell."""

    def __init__(self, C: int, num_labels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)  # 8x8 -> 2x2
        self.conv1 = nn.Conv2d(C, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 768, 2, bias=False)  # 2x2 -> 1x1
        self.bn2 = nn.BatchNorm2d(768)
        self.classifier = nn.Linear(768, num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.pool(F.relu(hidden_states))
        hidden_states = F.relu(self.bn1(self.conv1(hidden_states)))
        hidden_states = F.relu(self.bn2(self.conv2(hidden_states)))
        return self.classifier(hidden_states.flatten(1))


class DCANASPreTrainedModel(PreTrainedModel):
    config_class = DCANASConfig
    config: DCANASConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = ["DCANASNB201Cell", "DCANASDartsCell", "ResNetBasicBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if pixel_values is None:
            raise ValueError("DCA-NAS models need pixel_values of shape [batch, channels, height, width].")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values has shape {list(pixel_values.shape)} but this {config.search_space} network was built "
                f"for [batch, {config.num_channels}, {config.image_size}, {config.image_size}] (num_channels="
                f"{config.num_channels}, image_size={config.image_size}). Preprocess images with the model's "
                "image processor (AutoImageProcessor.from_pretrained(folder) or "
                "hf_compress.nas.default_image_processor(config))."
            )


class DCANASModel(DCANASPreTrainedModel):
    """The network without its classifier: stem and cells, then global average pooling."""

    # loading a DCANASForImageClassification folder into the bare model drops its heads silently
    _keys_to_ignore_on_load_unexpected = [r"^classifier\.", r"^auxiliary_head\."]

    def __init__(self, config: DCANASConfig) -> None:
        super().__init__(config)
        genotype = config.parsed_genotype
        C = config.init_channels
        self.drop_path_prob = config.drop_path_prob
        self.auxiliary_index = None
        self.auxiliary_channels = None
        if config.search_space == NB201:
            self.stem = DCANASStem(config.num_channels, C)
            cells, C_prev = [], C
            for stage in range(3):
                C_stage = C * 2**stage
                if stage > 0:
                    cells.append(ResNetBasicBlock(C_prev, C_stage, 2))
                cells += [DCANASNB201Cell(genotype, C_stage) for _ in range(config.cells_per_stage)]
                C_prev = C_stage
            self.cells = nn.ModuleList(cells)
            self.final_norm = nn.BatchNorm2d(C_prev)
        else:
            C_curr = config.stem_multiplier * C
            self.stem = DCANASStem(config.num_channels, C_curr)
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reductions = config.reduction_layers
            cells, reduction_prev = [], False
            for i in range(config.num_layers):
                reduction = i in reductions
                if reduction:
                    C_curr *= 2
                edges, concat = genotype.cell(reduction)
                cell = DCANASDartsCell(edges, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
                cells.append(cell)
                reduction_prev = reduction
                C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
                if i == 2 * config.num_layers // 3:
                    self.auxiliary_index, self.auxiliary_channels = i, C_prev
            self.cells = nn.ModuleList(cells)
            self.final_norm = None
        self.num_features = C_prev
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_auxiliary: bool = False,
        **kwargs,
    ) -> DCANASModelOutput:
        self.check_pixel_values(pixel_values)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        drop_prob = self.drop_path_prob if self.training else 0.0
        hidden_states = self.stem(pixel_values)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        auxiliary = None
        if self.config.search_space == NB201:
            for cell in self.cells:
                if isinstance(cell, DCANASNB201Cell):
                    hidden_states = cell(hidden_states, drop_prob)
                else:
                    hidden_states = cell(hidden_states)
                if output_hidden_states:
                    all_hidden_states += (hidden_states,)
            hidden_states = F.relu(self.final_norm(hidden_states))
        else:
            s0 = s1 = hidden_states
            for i, cell in enumerate(self.cells):
                s0, s1 = s1, cell(s0, s1, drop_prob)
                if output_hidden_states:
                    all_hidden_states += (s1,)
                if output_auxiliary and i == self.auxiliary_index:
                    auxiliary = s1
            hidden_states = s1
        pooled = F.adaptive_avg_pool2d(hidden_states, 1).flatten(1)
        return DCANASModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            auxiliary_hidden_state=auxiliary,
        )


def _classification_loss(config: DCANASConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int, torch.uint8):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).squeeze(-1))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1).long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class DCANASForImageClassification(DCANASPreTrainedModel):
    """The derived network with a linear classifier (and, for DARTS, an optional auxiliary head whose
    loss is added with weight ``auxiliary_weight`` while training)."""

    def __init__(self, config: DCANASConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = DCANASModel(config)
        self.classifier = nn.Linear(self.model.num_features, config.num_labels)
        self.auxiliary_head = (
            DCANASAuxiliaryHead(self.model.auxiliary_channels, config.num_labels)
            if config.use_auxiliary_head and self.model.auxiliary_channels is not None
            else None
        )
        self.post_init()

    @property
    def drop_path_prob(self) -> float:
        """Drop-path probability used while training (DARTS ramps it up over the epochs: set it per epoch)."""
        return self.model.drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        self.model.drop_path_prob = float(value)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        use_auxiliary = self.auxiliary_head is not None and self.training and labels is not None
        outputs = self.model(pixel_values, output_hidden_states=output_hidden_states, output_auxiliary=use_auxiliary)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = _classification_loss(self.config, logits, labels)
            if use_auxiliary:
                auxiliary_logits = self.auxiliary_head(outputs.auxiliary_hidden_state)
                loss = loss + self.config.auxiliary_weight * _classification_loss(self.config, auxiliary_logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def save_pretrained(self, save_directory, *args, save_image_processor: bool = True, **kwargs):
        """``PreTrainedModel.save_pretrained``, plus the default image processor (preprocessor_config.json)
        when the folder has none yet, so ``AutoImageProcessor`` and ``pipeline`` work on the folder."""
        if save_image_processor and kwargs.get("is_main_process", True) and not os.path.isfile(save_directory):
            os.makedirs(save_directory, exist_ok=True)
            if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
                default_image_processor(self.config).save_pretrained(save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)
