"""Options of RAMEN training, as a ``TrainingArguments`` subclass (flags, JSON or YAML via HfArgumentParser)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


def parse_graph_weights(text: str) -> dict[str, float]:
    """``"citation=0.2,coread=0.1"`` -> {"citation": 0.2, "coread": 0.1}; a bare name gets 0.2."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value) if value else 0.2
        except ValueError:
            raise ValueError(f"graph_weights: {item!r} is not 'name=weight' (e.g. 'citation=0.2,coread=0.2').") from None
        if weights[name.strip()] < 0:
            raise ValueError(f"graph_weights: weight of {name!r} must be >= 0, got {value}.")
    return weights


@dataclass
class RamenTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the RAMEN loss, mining and classifier knobs.

    Defaults follow the method notes: triplet margin 0.3 with the 5 hardest in-batch negatives, graph weights
    0.2 each, NGAME-style cluster batches refreshed from the current encoder every epoch. ``graph_weights``
    empty = plain NGAME-style training (no metadata); the saved encoder is the same size either way.
    """

    margin: float = field(default=0.3, metadata={"help": "Triplet margin on cosine similarities."})
    num_negatives: int = field(default=5, metadata={"help": "Hardest in-batch negatives kept per query."})
    temperature: float | None = field(
        default=None, metadata={"help": "Weigh each query's negatives by softmax(s/temperature) (e.g. 0.1); unset = uniform."}
    )
    graph_weights: str = field(
        default="",
        metadata={"help": "Metadata graphs used as regularizers and their weights, e.g. 'citation=0.2,coread=0.2'."},
    )
    anchors_per_point: int = field(default=1, metadata={"help": "Graph neighbours sampled per point per batch."})
    graph_negatives: str = field(
        default="all",
        metadata={"help": "Which in-batch anchors are a point's graph negatives: 'all' not linked to it, or 'shared_label': "
                          "not the anchors of in-batch points that share a label with it (cluster batches make those "
                          "the hardest, and mostly relevant)."},
    )
    anchor_label_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a second graph term: every sampled graph anchor is also a query whose positives are the "
                          "labels of the train points linked to it (labels carried over the edges); 0 = off. Applies to "
                          "the graphs named in graph_weights (a graph may be listed with weight 0 to use only this term)."},
    )
    graph_reweight: bool = field(
        default=False,
        metadata={"help": "Before training and at every mining refresh, weight each graph edge by max(cos(point, anchor), 0) "
                          "of the current encoder, normalise D^-1/2 W D^-1/2, prune and sample anchors by weight."},
    )
    graph_min_weight: float = field(
        default=0.0,
        metadata={"help": "With graph_reweight: drop edges whose normalised weight is <= this (0 drops only edges with cosine <= 0)."},
    )
    graph_bandit: bool = field(
        default=False,
        metadata={"help": "Tune the graph weights online (REINFORCE on in-batch P@1) instead of keeping them fixed."},
    )
    bandit_arms: str = field(default="0,0.1,0.2,0.5", metadata={"help": "Candidate weights of the graph bandit."})
    cluster_size: int = field(
        default=16, metadata={"help": "Points per cluster in NGAME cluster batches (0 = plain random batches)."}
    )
    cluster_refresh_epochs: int = field(
        default=1, metadata={"help": "Rebuild the clusters from the current encoder every N epochs (0 = never)."}
    )
    mined_negatives: int = field(
        default=0,
        metadata={"help": "Hard-negative labels mined per point from an ANN index of label embeddings at each refresh (one sampled per batch)."},
    )
    max_seq_length: int = field(default=32, metadata={"help": "Token length of point and label texts."})
    eval_top_k: int = field(default=5, metadata={"help": "Labels retrieved per test point for P@k / nDCG@k / PSP@k."})
    propensity_a: float = field(default=0.55, metadata={"help": "Propensity model A (Jain et al. 2016)."})
    propensity_b: float = field(default=1.5, metadata={"help": "Propensity model B."})
    index_backend: str = field(default="auto", metadata={"help": "ANN backend for label search: auto | exact | hnswlib | faiss."})
    label_vectors: str = field(
        default="text",
        metadata={"help": "Label vectors of the search index: 'text' (the label text's embedding) or 'text+points' "
                          "(normalize(label_text_weight * text embedding + mean embedding of the label's train points)); "
                          "same index size and query cost either way.",
                  "choices": ["text", "text+points"]},
    )
    label_text_weight: float = field(default=1.0, metadata={"help": "With label_vectors='text+points': weight of the text embedding."})
    classifier_epochs: int = field(
        default=0, metadata={"help": "Epochs of the one-vs-all classifier stage on the frozen encoder (0 = skip)."}
    )
    classifier_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the classifier stage."})
    shortlist_size: int = field(default=50, metadata={"help": "ANN shortlist per point for the classifier stage."})
    fusion_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of the classifier score in the fused score (unset = chosen on a held-out slice of train)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the RAMEN collator needs the point_id column."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.graph_weight_map = parse_graph_weights(self.graph_weights)
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}.")
        if self.cluster_size < 0 or self.cluster_refresh_epochs < 0 or self.mined_negatives < 0:
            raise ValueError("cluster_size, cluster_refresh_epochs and mined_negatives must be >= 0.")
        if self.label_vectors not in ("text", "text+points"):
            raise ValueError(f"label_vectors must be 'text' or 'text+points', got {self.label_vectors!r}.")
        if self.label_text_weight < 0:
            raise ValueError(f"label_text_weight must be >= 0, got {self.label_text_weight}.")
        if self.anchor_label_weight < 0:
            raise ValueError(f"anchor_label_weight must be >= 0, got {self.anchor_label_weight}.")
        if self.graph_min_weight < 0:
            raise ValueError(f"graph_min_weight must be >= 0, got {self.graph_min_weight}.")
        if self.graph_negatives not in ("all", "shared_label"):
            raise ValueError(f"graph_negatives must be 'all' or 'shared_label', got {self.graph_negatives!r}.")
        if self.fusion_weight is not None and not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {self.fusion_weight}.")
        self.bandit_arm_values = [float(v) for v in self.bandit_arms.split(",") if v.strip()]
