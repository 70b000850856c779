"""The DCA-NAS supernet: every cell edge is a softmax(alpha)-weighted mixture of the space's candidate ops.

One class serves both spaces (``search_space="nb201"`` or ``"darts"``); the skeleton around the cells is
that of the derived network (``modeling_dcanas.py``) at search size. Three search-time speed-ups, each
switchable for ablation:

* ``channel_bottleneck=k`` (1 = off): the candidate ops run on ``C // k`` channels. NB201,
  ``bottleneck_scope="cell"``: a 1x1 conv + BN shrinks the cell's input and another expands the cell's output
  back to ``C``, so every path through the cell, ``skip_connect`` included, passes two 1x1 convs.
  ``bottleneck_scope="ops"``: the node states stay ``C`` wide; only the ops with weights (the convolutions) run
  narrow, on a per-source-node shrink, and their sum into each node is expanded once per target node, while
  ``skip_connect`` and pooling act on the full-width states. A skip is then an identity path through the cell,
  as it is in the derived network, which is what makes the space's best cells (a skip from the input to the
  output node) trainable at depth. DARTS: the two input preprocessings output ``C // k`` directly and the
  concatenated nodes are expanded (``bottleneck_scope="cell"`` only).
* ``weight_sharing``: the op ``o`` applied to state ``i`` is one module for every edge ``i -> j`` (and is
  computed once per forward); without it each edge owns its ops.
* ``derived_cells``: only the first cell of each type (NB201: the first cell; DARTS: the first normal and
  the first reduction cell) computes the full mixture; every other cell runs only the ops of the current
  genotype (argmax of alpha), scaled by ``p / p.detach()`` so alpha still gets a gradient through them.
  In training mode (``derived_sampling``, the default) each derived cell instead draws its genotype from
  softmax(alpha) (argmax of Gumbel-perturbed alpha): at the nearly uniform alpha of the warm-up every op
  of a derived cell gets trained, and as alpha sharpens the draw becomes the argmax. With the argmax alone,
  only the ops of the random initial genotype are ever trained in derived cells, the alternatives stay
  untrained and look worse, and the search locks onto its initial (often pooling) cell.
  Without ``derived_cells`` every cell computes the mixture (plain DARTS). In both modes there is one alpha per cell type
  (NB201: one 6 x 5 alpha; DARTS: a 14 x 8 alpha for normal and one for reduction cells).

Architecture parameters live in ``self.alphas`` (``arch_parameters()``); ``weight_parameters()`` is
everything else (not the ``constraint`` submodule a trainer may attach). ``genotype()`` derives the cell:
NB201 the top-weighted non-``none`` op per edge (DCA-NAS; ``exclude_none=False``: plain argmax);
DARTS the top-2 incoming edges per node by their strongest non-``none`` op.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_dcanas import DCANASConfig
from .modeling_dcanas import DCANASStem
from .ops import FactorizedReduce, ReLUConvBN, ResNetBasicBlock, build_op
from .spaces import NB201, DartsGenotype, NB201Genotype, SearchSpace, get_space

ARCH_PREFIX = "alphas."
NB201_OPS_NONE = 0  # index of `none` in NB201_OPS
CONSTRAINT_PREFIX = "constraint."
BOTTLENECK_SCOPES = ("cell", "ops")


@dataclass
class SupernetSettings:
    """Everything that defines a supernet (stored in search results so a search can be rebuilt)."""

    search_space: str = NB201
    init_channels: int = 16
    cells_per_stage: int | None = 5   # NB201
    num_layers: int | None = None     # DARTS
    stem_multiplier: int = 1
    num_classes: int = 10
    image_size: int = 32
    num_channels: int = 3
    channel_bottleneck: int = 1
    bottleneck_scope: str = "cell"    # "cell": shrink the cell; "ops" (NB201): only ops with weights run narrow
    weight_sharing: bool = False
    derived_cells: bool = False
    derived_sampling: bool = True     # derived cells draw their genotype from softmax(alpha) while training
    alpha_init_std: float = 1e-3
    exclude_none: bool = True         # NB201 derivation: top non-`none` op per edge (DARTS always)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_settings(
    search_space: str | SearchSpace = NB201,
    init_channels: int | None = None,
    cells_per_stage: int | None = None,
    num_layers: int | None = None,
    stem_multiplier: int | None = None,
    num_classes: int = 10,
    image_size: int = 32,
    num_channels: int = 3,
    channel_bottleneck: int = 1,
    weight_sharing: bool = False,
    derived_cells: bool = False,
    alpha_init_std: float = 1e-3,
    exclude_none: bool = True,
    derived_sampling: bool = True,
    bottleneck_scope: str = "cell",
) -> SupernetSettings:
    """Fill defaults from the space's *search* network (NB201: C=16, N=5; DARTS: C=16, 8 cells) and check."""
    space = get_space(search_space)
    C = space.search_init_channels if init_channels is None else int(init_channels)
    if space.name == NB201:
        if num_layers is not None:
            raise ValueError("num_layers applies to the DARTS space; size a NAS-Bench-201 supernet with cells_per_stage.")
        cells_per_stage = space.cells_per_stage if cells_per_stage is None else int(cells_per_stage)
        stem_multiplier = 1
        if cells_per_stage < 1:
            raise ValueError(f"cells_per_stage must be >= 1, got {cells_per_stage}.")
    else:
        if cells_per_stage is not None:
            raise ValueError("cells_per_stage applies to the NAS-Bench-201 space; size a DARTS supernet with num_layers.")
        num_layers = space.search_num_layers if num_layers is None else int(num_layers)
        stem_multiplier = space.stem_multiplier if stem_multiplier is None else int(stem_multiplier)
        if num_layers < 3:
            raise ValueError(f"A DARTS supernet needs num_layers >= 3 (two reduction cells), got {num_layers}.")
    k = int(channel_bottleneck)
    if k < 1:
        raise ValueError(f"channel_bottleneck is a shrink factor >= 1 (1 = off), got {channel_bottleneck}.")
    if C // k < 2:
        raise ValueError(
            f"channel_bottleneck={k} leaves {C // k} channel(s) of init_channels={C}; the ops need >= 2 "
            f"(use channel_bottleneck <= {C // 2})."
        )
    if bottleneck_scope not in BOTTLENECK_SCOPES:
        raise ValueError(f"bottleneck_scope must be one of {BOTTLENECK_SCOPES}, got {bottleneck_scope!r}.")
    if bottleneck_scope == "ops" and space.name != NB201:
        raise ValueError(
            "bottleneck_scope='ops' is implemented for the NAS-Bench-201 space; DARTS cells shrink through their "
            "input preprocessing (use bottleneck_scope='cell')."
        )
    if image_size % 4:
        raise ValueError(f"image_size must be divisible by 4 (the network halves it twice), got {image_size}.")
    return SupernetSettings(
        search_space=space.name, init_channels=C, cells_per_stage=cells_per_stage, num_layers=num_layers,
        stem_multiplier=stem_multiplier, num_classes=int(num_classes), image_size=int(image_size),
        num_channels=int(num_channels), channel_bottleneck=k, weight_sharing=bool(weight_sharing),
        derived_cells=bool(derived_cells), alpha_init_std=float(alpha_init_std), exclude_none=bool(exclude_none),
        derived_sampling=bool(derived_sampling), bottleneck_scope=bottleneck_scope,
    )


# --------------------------------------------------------------------------------------------------------
# alpha -> genotype
# --------------------------------------------------------------------------------------------------------


def nb201_choice(probs: torch.Tensor, exclude_none: bool = True) -> list[int]:
    """Op index per edge: the top-weighted non-``none`` op (DCA-NAS), or with ``exclude_none=False`` the
    plain argmax (NAS-Bench-201's DARTS derivation)."""
    if exclude_none:
        probs = probs.clone()
        probs[:, NB201_OPS_NONE] = -1.0
    return probs.argmax(dim=-1).tolist()


def darts_choice(space: SearchSpace, probs: torch.Tensor) -> list[int | None]:
    """Per candidate edge: the op index kept (strongest non-``none`` op) or ``None`` when the edge is dropped
    (each node keeps its 2 incoming edges with the strongest non-``none`` op)."""
    none = space.ops.index("none")
    masked = probs.clone()
    masked[:, none] = -1.0
    best_op = masked.argmax(dim=-1).tolist()
    strength = masked.max(dim=-1).values.tolist()
    chosen: list[int | None] = [None] * space.num_edges
    for target in range(2, space.num_nodes + 2):
        incoming = space.incoming_edges(target)
        keep = sorted(incoming, key=lambda e: (-strength[e], e))[: space.inputs_per_node]
        for e in keep:
            chosen[e] = best_op[e]
    return chosen


def genotype_from_probs(space: str | SearchSpace, probs: dict[str, torch.Tensor], exclude_none: bool = True):
    """The genotype of ``{cell_type: probabilities [edges, ops]}`` (NB201: the top-weighted non-``none`` op
    per edge, or the argmax with ``exclude_none=False``; DARTS: top-2 incoming edges per node by their
    strongest non-``none`` op, listed strongest first)."""
    space = get_space(space)
    if space.name == NB201:
        return NB201Genotype.from_ops([space.ops[k] for k in nb201_choice(probs["normal"], exclude_none)])
    cells = {}
    for kind in ("normal", "reduce"):
        p = probs[kind]
        chosen = darts_choice(space, p)
        pairs = []
        for target in range(2, space.num_nodes + 2):
            kept = [e for e in space.incoming_edges(target) if chosen[e] is not None]
            kept.sort(key=lambda e: (-float(p[e, chosen[e]]), e))
            pairs += [(space.ops[chosen[e]], space.edges[e][0]) for e in kept]
        cells[kind] = tuple(pairs)
    concat = tuple(range(2, space.num_nodes + 2))
    return DartsGenotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"], reduce_concat=concat)


def alphas_for_genotype(space: str | SearchSpace, genotype, scale: float = 30.0) -> dict[str, torch.Tensor]:
    """Alphas that are one-hot (logit ``scale``) on ``genotype``: NB201 each edge's op; DARTS the kept edges'
    ops and ``none`` on every dropped edge. ``genotype_from_probs(softmax(...))`` gives ``genotype`` back."""
    space = get_space(space)
    out = {}
    if space.name == NB201:
        if isinstance(genotype, str):
            genotype = NB201Genotype.parse(genotype)
        alpha = torch.zeros(space.num_edges, space.num_ops)
        for e, op in enumerate(genotype.ops):
            alpha[e, space.op_index(op)] = scale
        return {"normal": alpha}
    if isinstance(genotype, str):
        genotype = DartsGenotype.parse(genotype)
    none = space.op_index("none")
    for kind in ("normal", "reduce"):
        edges, _ = genotype.cell(kind == "reduce")
        alpha = torch.zeros(space.num_edges, space.num_ops)
        alpha[:, none] = scale
        for k, (op, source) in enumerate(edges):
            target = k // space.inputs_per_node + 2
            e = space.edges.index((source, target))
            alpha[e, none] = 0.0
            # a later duplicate of the same edge would be ambiguous; the stronger logit goes to the first
            alpha[e, space.op_index(op)] = max(float(alpha[e, space.op_index(op)]), scale - k * 1e-3)
        out[kind] = alpha
    return out


# --------------------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------------------


class _Shrink(nn.Module):
    """1x1 conv + BN (no ReLU: every candidate op starts with one)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(hidden_states))


class SearchCell(nn.Module):
    """One searchable cell of either space.

    ``forward(inputs, probs, chosen)``: ``probs`` [edges, ops] are the cell type's softmax(alpha);
    ``chosen`` None computes the mixture, else a list with one op index (or None: edge dropped) per edge.
    ``bottleneck_scope`` (NB201, when ``C_op < C``): "cell" shrinks the cell, "ops" only the ops with weights
    (see the module docstring).
    """

    def __init__(
        self,
        space: SearchSpace,
        C: int,
        C_op: int,
        weight_sharing: bool,
        reduction: bool = False,
        C_prev_prev: int | None = None,
        C_prev: int | None = None,
        reduction_prev: bool = False,
        bottleneck_scope: str = "cell",
    ) -> None:
        super().__init__()
        self.space = space
        self.reduction = reduction
        self.weight_sharing = weight_sharing
        self.C, self.C_op = C, C_op
        self.none_index = space.op_index("none")
        self.narrow_ops = space.name == NB201 and bottleneck_scope == "ops" and C_op != C
        kw = dict(affine=False, track_running_stats=False, search=True)
        sources = sorted({i for i, _ in space.edges})
        # the width each op runs at: with narrow ops only the ones with weights are shrunk
        self.full_width = [
            self.narrow_ops and not any(True for _ in build_op(space.name, name, C, C, 1, **kw).parameters())
            for name in space.ops
        ]
        if space.name == NB201:
            cell_shrink = C_op != C and not self.narrow_ops
            self.shrink = _Shrink(C, C_op) if cell_shrink else None
            self.preprocess0 = self.preprocess1 = None
            self.expand = _Shrink(C_op, C) if cell_shrink else None
            targets = sorted({j for _, j in space.edges})
            self.source_shrinks = nn.ModuleDict({str(i): _Shrink(C, C_op) for i in sources}) if self.narrow_ops else None
            self.target_expands = nn.ModuleDict({str(j): _Shrink(C_op, C) for j in targets}) if self.narrow_ops else None
        else:
            if reduction_prev:
                self.preprocess0 = FactorizedReduce(C_prev_prev, C_op, 2, affine=False, track_running_stats=False)
            else:
                self.preprocess0 = ReLUConvBN(C_prev_prev, C_op, 1, 1, 0, affine=False, track_running_stats=False)
            self.preprocess1 = ReLUConvBN(C_prev, C_op, 1, 1, 0, affine=False, track_running_stats=False)
            self.shrink = self.source_shrinks = self.target_expands = None
            concat = space.num_nodes
            self.expand = _Shrink(concat * C_op, concat * C) if C_op != C else None
        self.multiplier = 1 if space.name == NB201 else space.num_nodes

        def stride(source: int) -> int:
            return 2 if (reduction and source < space.num_cell_inputs) else 1

        def ops_for(source: int) -> nn.ModuleList:
            widths = [C if full else C_op for full in self.full_width]
            return nn.ModuleList(
                [build_op(space.name, name, w, w, stride(source), **kw) for name, w in zip(space.ops, widths)]
            )

        if weight_sharing:
            self.source_ops = nn.ModuleDict({str(i): ops_for(i) for i in sources})
            self.edge_ops = None
        else:
            self.source_ops = None
            self.edge_ops = nn.ModuleList([ops_for(i) for i, _ in space.edges])
        self.strides = [stride(i) for i, _ in space.edges]

    def _op(self, e: int, o: int) -> nn.Module:
        if self.weight_sharing:
            return self.source_ops[str(self.space.edges[e][0])][o]
        return self.edge_ops[e][o]

    def forward(self, inputs: tuple[torch.Tensor, ...], probs: torch.Tensor, chosen=None) -> torch.Tensor:
        space = self.space
        if space.name == NB201:
            (x,) = inputs
            states = [self.shrink(x) if self.shrink is not None else x]
            first_target = 1
        else:
            s0, s1 = inputs
            states = [self.preprocess0(s0), self.preprocess1(s1)]
            first_target = 2
        cache: dict[tuple[int, int], torch.Tensor] = {}
        shrunk: dict[int, torch.Tensor] = {}

        def op_input(source: int, o: int) -> torch.Tensor:
            if not self.narrow_ops or self.full_width[o]:
                return states[source]
            if source not in shrunk:
                shrunk[source] = self.source_shrinks[str(source)](states[source])
            return shrunk[source]

        def run(e: int, o: int) -> torch.Tensor:
            source = space.edges[e][0]
            key = (source, o) if self.weight_sharing else (e, o)
            if key not in cache:
                cache[key] = self._op(e, o)(op_input(source, o))
            return cache[key]

        def add(total, term):
            return term if total is None else total + term

        last = space.num_nodes - 1 if space.name == NB201 else space.num_nodes + 1
        for target in range(first_target, last + 1):
            wide = narrow = None  # narrow: the shrunk ops' sum, expanded once per node (narrow_ops only)
            for e in space.incoming_edges(target):
                if chosen is None:
                    terms = [(o, probs[e, o] * run(e, o)) for o in range(space.num_ops) if o != self.none_index]
                else:
                    o = chosen[e]
                    if o is None or o == self.none_index:
                        continue
                    p = probs[e, o]
                    terms = [(o, run(e, o) * (p / p.detach()))]
                for o, term in terms:
                    if self.narrow_ops and not self.full_width[o]:
                        narrow = add(narrow, term)
                    else:
                        wide = add(wide, term)
            total = wide
            if narrow is not None:
                total = add(total, self.target_expands[str(target)](narrow))
            if total is None:  # only `none` reaches this node: zeros of the node's shape
                e = space.incoming_edges(target)[0]
                source = states[space.edges[e][0]]
                s = self.strides[e]
                total = source[:, :, ::s, ::s] * 0.0
            states.append(total)
        if space.name == NB201:
            out = states[-1]
        else:
            out = torch.cat(states[first_target:], dim=1)
        return self.expand(out) if self.expand is not None else out


class DCANASSupernet(nn.Module):
    """The search network of DCA-NAS (see the module docstring). ``forward(pixel_values, labels=None)``
    returns an ``ImageClassifierOutput`` (cross-entropy loss when labels are given)."""

    main_input_name = "pixel_values"

    def __init__(self, settings: SupernetSettings | None = None, **kwargs) -> None:
        super().__init__()
        if settings is None:
            settings = resolve_settings(**kwargs)
        elif kwargs:
            raise ValueError("Pass either settings or keyword arguments, not both.")
        self.settings = settings
        space = self.space = get_space(settings.search_space)
        C, k = settings.init_channels, settings.channel_bottleneck
        self.cell_types = space.cell_types
        self.alphas = nn.ParameterDict(
            {
                kind: nn.Parameter(settings.alpha_init_std * torch.randn(space.num_edges, space.num_ops))
                for kind in space.cell_types
            }
        )
        cells, kinds, searched = [], [], []
        if space.name == NB201:
            self.stem = DCANASStem(settings.num_channels, C)
            C_prev = C
            for stage in range(space.num_stages):
                C_stage = C * 2**stage
                if stage > 0:
                    cells.append(ResNetBasicBlock(C_prev, C_stage, 2))
                    kinds.append(None)
                for _ in range(settings.cells_per_stage):
                    cells.append(SearchCell(space, C_stage, max(2, C_stage // k), settings.weight_sharing,
                                            bottleneck_scope=settings.bottleneck_scope))
                    kinds.append("normal")
                C_prev = C_stage
            self.final_norm = nn.BatchNorm2d(C_prev)
        else:
            C_curr = settings.stem_multiplier * C
            self.stem = DCANASStem(settings.num_channels, C_curr)
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reductions = space.reduction_layers(settings.num_layers)
            reduction_prev = False
            for i in range(settings.num_layers):
                reduction = i in reductions
                if reduction:
                    C_curr *= 2
                cell = SearchCell(
                    space, C_curr, max(2, C_curr // k), settings.weight_sharing, reduction, C_prev_prev, C_prev,
                    reduction_prev,
                )
                cells.append(cell)
                kinds.append("reduce" if reduction else "normal")
                reduction_prev = reduction
                C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            self.final_norm = None
        # derived cells: only the first cell of each type computes the mixture
        seen = set()
        for kind in kinds:
            mixed = kind is not None and (not settings.derived_cells or kind not in seen)
            searched.append(mixed)
            if kind is not None:
                seen.add(kind)
        self.cells = nn.ModuleList(cells)
        self.cell_kinds = kinds
        self.cell_mixed = searched
        self.num_features = C_prev
        self.classifier = nn.Linear(C_prev, settings.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    # -- parameters ------------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas[kind] for kind in self.cell_types]

    def named_weight_parameters(self):
        for name, param in self.named_parameters():
            if not name.startswith((ARCH_PREFIX, CONSTRAINT_PREFIX)):
                yield name, param

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def probabilities(self, detach: bool = True) -> dict[str, torch.Tensor]:
        return {
            kind: F.softmax(self.alphas[kind].detach() if detach else self.alphas[kind], dim=-1)
            for kind in self.cell_types
        }

    def alpha_entropy(self) -> float:
        """Mean entropy (nats) of softmax(alpha) over all edges of all cell types (log(#ops) when uniform)."""
        values = []
        for p in self.probabilities().values():
            values.append(-(p * p.clamp_min(1e-12).log()).sum(-1))
        return float(torch.cat(values).mean())

    def genotype(self):
        return genotype_from_probs(self.space, self.probabilities(), self.settings.exclude_none)

    def current_choice(self, sample: bool = False) -> dict[str, list]:
        """Op index per edge of each cell type: the genotype's (argmax), or with ``sample=True`` one drawn
        from softmax(alpha) (Gumbel-max: the argmax of log-probabilities plus Gumbel noise)."""
        probs = self.probabilities()
        if sample:
            probs = {
                kind: F.softmax(p.clamp_min(1e-30).log() - torch.empty_like(p).exponential_().log(), dim=-1)
                for kind, p in probs.items()
            }
        if self.space.name == NB201:
            return {"normal": nb201_choice(probs["normal"], self.settings.exclude_none)}
        return {kind: darts_choice(self.space, probs[kind]) for kind in self.cell_types}

    @torch.no_grad()
    def set_genotype(self, genotype, scale: float = 30.0) -> None:
        """Set alpha one-hot on ``genotype`` (for tests and for warm-starting a search)."""
        for kind, alpha in alphas_for_genotype(self.space, genotype, scale).items():
            self.alphas[kind].copy_(alpha)

    def derived_config(self, **overrides) -> DCANASConfig:
        """``DCANASConfig`` of the current genotype at this supernet's size (``overrides`` resize it)."""
        s = self.settings
        kwargs = dict(
            search_space=s.search_space, genotype=self.genotype(), init_channels=s.init_channels,
            image_size=s.image_size, num_channels=s.num_channels, num_classes=s.num_classes,
        )
        if s.search_space == NB201:
            kwargs["cells_per_stage"] = s.cells_per_stage
        else:
            kwargs.update(num_layers=s.num_layers, stem_multiplier=s.stem_multiplier)
        kwargs.update(overrides)
        return DCANASConfig(**kwargs)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, arch_grad: bool = True,
        **kwargs,
    ) -> ImageClassifierOutput:
        """``arch_grad=False`` detaches alpha (the weight step of the bilevel search)."""
        s = self.settings
        expected = (s.num_channels, s.image_size, s.image_size)
        if pixel_values is None or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            shape = None if pixel_values is None else list(pixel_values.shape)
            raise ValueError(
                f"pixel_values has shape {shape}; this supernet was built for [batch, {s.num_channels}, "
                f"{s.image_size}, {s.image_size}] (num_channels={s.num_channels}, image_size={s.image_size})."
            )
        probs = {
            kind: F.softmax(self.alphas[kind] if arch_grad else self.alphas[kind].detach(), dim=-1)
            for kind in self.cell_types
        }
        sample = s.derived_sampling and self.training
        choice = self.current_choice() if s.derived_cells and not sample else None

        def chosen(kind: str, mixed: bool):
            if mixed:
                return None
            return (self.current_choice(sample=True) if sample else choice)[kind]

        hidden_states = self.stem(pixel_values)
        if self.space.name == NB201:
            for cell, kind, mixed in zip(self.cells, self.cell_kinds, self.cell_mixed):
                if kind is None:
                    hidden_states = cell(hidden_states)
                else:
                    hidden_states = cell((hidden_states,), probs[kind], chosen(kind, mixed))
            hidden_states = F.relu(self.final_norm(hidden_states))
        else:
            s0 = s1 = hidden_states
            for cell, kind, mixed in zip(self.cells, self.cell_kinds, self.cell_mixed):
                s0, s1 = s1, cell((s0, s1), probs[kind], chosen(kind, mixed))
            hidden_states = s1
        logits = self.classifier(F.adaptive_avg_pool2d(hidden_states, 1).flatten(1))
        loss = F.cross_entropy(logits, labels.view(-1).long()) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def supernet_macs(supernet: DCANASSupernet) -> int:
    """MACs per image of one forward of ``supernet`` (conv / linear layers that actually run)."""
    from .cost import count_macs

    s = supernet.settings
    return count_macs(supernet, torch.zeros(2, s.num_channels, s.image_size, s.image_size))


def count_supernet_params(supernet: DCANASSupernet) -> int:
    """Weight parameters (alpha excluded)."""
    return sum(p.numel() for p in supernet.weight_parameters())


def uniform_entropy(space: str | SearchSpace) -> float:
    return math.log(get_space(space).num_ops)
