"""``RamenTrainer``: siamese encoder training for extreme classification, regularized by metadata graphs.

Per step (one encoder forward over points, sampled positive labels and sampled graph anchors):
``loss = triplet(points, labels) + sum_g w_g * triplet(points, anchors_g)`` (with ``anchor_label_weight`` also
``+ sum_g v * triplet(anchors_g, labels)``, the anchors labelled through the graph edges); every term is logged. Batches are
NGAME cluster batches (similar points together, so in-batch negatives are hard), rebuilt from the current
encoder every ``cluster_refresh_epochs``. With ``graph_reweight`` the graphs are re-weighted by embedding cosine,
normalised (D^-1/2 W D^-1/2) and pruned at the same refreshes (and once before training in any case), and anchors
are then sampled by edge weight. ``evaluate()`` retrieves labels for the test points through the ANN
index and reports P@k / nDCG@k / PSP@k / PSnDCG@k; ``train_classifier()`` runs the one-vs-all stage.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from hf_compress.ramen.classifier import train_classifier
from hf_compress.ramen.collator import RamenCollator
from hf_compress.ramen.data import XCData, XCSplit
from hf_compress.ramen.graph_weights import reweight_graph
from hf_compress.ramen.losses import graph_regularizer, multi_positive_triplet_loss
from hf_compress.ramen.mining import ClusterBatchSampler, EmbeddingIndex, hard_negatives
from hf_compress.ramen.modeling_ramen import RamenEncoder
from hf_compress.ramen.predict import XCPredictor, evaluate_xc, label_vectors_with_points

from .ramen_config import RamenTrainingArguments

logger = logging.getLogger(__name__)
FUSION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class _ClusterRefresh(TrainerCallback):
    """Rebuild cluster batches, mined negatives and re-weighted graphs from the current encoder at the start of
    chosen epochs; re-weighted graphs are also built before the first epoch when no refresh is due then."""

    def __init__(self, trainer: "RamenTrainer") -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        every = args.cluster_refresh_epochs
        epoch = int(round(state.epoch or 0))
        if every > 0 and epoch % every == 0:
            self.trainer.refresh_mining()
        elif args.graph_reweight and self.trainer.graph_refreshes == 0:
            self.trainer.refresh_graphs()
        return control


class GraphWeightBandit:
    """REINFORCE over a few candidate weights per graph; reward = change of in-batch P@1 after the step."""

    def __init__(self, graphs: list[str], arms: list[float], seed: int = 0, learning_rate: float = 0.5) -> None:
        self.graphs, self.arms = graphs, arms
        self.logits = {g: np.zeros(len(arms)) for g in graphs}
        self.rng = np.random.default_rng(seed)
        self.learning_rate = learning_rate
        self.baseline: float | None = None
        self.last_choice: dict[str, int] | None = None

    def probabilities(self, graph: str) -> np.ndarray:
        z = np.exp(self.logits[graph] - self.logits[graph].max())
        return z / z.sum()

    def choose(self) -> dict[str, float]:
        self.last_choice = {g: int(self.rng.choice(len(self.arms), p=self.probabilities(g))) for g in self.graphs}
        return {g: self.arms[i] for g, i in self.last_choice.items()}

    def reward(self, value: float) -> None:
        if self.last_choice is None:
            return
        if self.baseline is None:
            self.baseline = value
            return
        advantage = value - self.baseline
        self.baseline = 0.9 * self.baseline + 0.1 * value
        for g, arm in self.last_choice.items():
            grad = -self.probabilities(g)
            grad[arm] += 1.0
            self.logits[g] += self.learning_rate * advantage * grad

    def expected_weights(self) -> dict[str, float]:
        return {g: float(np.dot(self.probabilities(g), self.arms)) for g in self.graphs}


class RamenTrainer(Trainer):
    """Train a ``RamenEncoder`` on an ``XCData`` (train split for training, test split for ``evaluate()``)."""

    def __init__(
        self,
        model: RamenEncoder,
        args: RamenTrainingArguments,
        data: XCData,
        processing_class=None,
        train_dataset=None,
        eval_split: XCSplit | None = None,
        callbacks=None,
        **kwargs,
    ) -> None:
        if not isinstance(model, RamenEncoder):
            raise TypeError(
                f"RamenTrainer trains a RamenEncoder, got {type(model).__name__}; build one with "
                "RamenEncoder.from_backbone(path_of_an_encoder)."
            )
        if not isinstance(args, RamenTrainingArguments):
            raise TypeError("RamenTrainer needs RamenTrainingArguments (the loss, mining and classifier options).")
        if processing_class is None:
            raise ValueError("RamenTrainer needs the tokenizer of the backbone as processing_class.")
        unknown = sorted(set(args.graph_weight_map) - set(data.graphs))
        if unknown:
            raise ValueError(
                f"graph_weights names {unknown}, which {data.name} does not have; available metadata graphs: "
                f"{sorted(data.graphs) or 'none'}."
            )
        self.data = data
        self.eval_split = eval_split if eval_split is not None else data.test
        graphs = {
            name: (data.graphs[name].matrix, data.graphs[name].anchor_texts)
            for name, weight in args.graph_weight_map.items()
            if weight > 0 or args.graph_bandit or args.anchor_label_weight > 0
        }
        collator = RamenCollator(
            tokenizer=processing_class,
            point_texts=data.train.texts,
            labels=data.train.labels,
            label_texts=data.label_texts,
            graphs=graphs,
            max_length=args.max_seq_length,
            anchors_per_point=args.anchors_per_point,
            seed=args.seed + args.process_index,
            graph_negatives=args.graph_negatives,
            anchor_labels=args.anchor_label_weight > 0,
        )
        if train_dataset is None:
            train_dataset = data.train.to_dataset().select_columns(["point_id"])
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        self.collator = collator
        self.graph_names = list(graphs)
        # the graphs as loaded (the collator may hold re-weighted, pruned copies of them)
        self.original_graphs = {name: matrix for name, (matrix, _) in graphs.items()}
        self.graph_refreshes = 0
        self.graph_edge_stats: dict[str, dict[str, float]] = {}
        self.bandit = (
            GraphWeightBandit(self.graph_names, args.bandit_arm_values, seed=args.seed) if args.graph_bandit and graphs else None
        )
        self._batch_sampler: ClusterBatchSampler | None = None
        self._extra_logs: dict[str, list[float]] = defaultdict(list)
        self.classifier = None
        self.fusion_weight = 0.0
        self.last_eval_metrics: dict[str, float] | None = None
        self.train_seconds = 0.0
        if (args.cluster_refresh_epochs > 0 and (args.cluster_size > 0 or args.mined_negatives > 0)) or (
            args.graph_reweight and graphs
        ):
            self.add_callback(_ClusterRefresh(self))

    # -- data ------------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if self.args.cluster_size <= 0:
            return super().get_train_dataloader()
        self._batch_sampler = ClusterBatchSampler(
            len(self.train_dataset), batch_size=self._train_batch_size, cluster_size=self.args.cluster_size,
            seed=self.args.seed, drop_last=self.args.dataloader_drop_last,
        )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self._batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        return self.accelerator.prepare(loader)

    def _unwrapped(self) -> RamenEncoder:
        return self.accelerator.unwrap_model(self.model)

    def refresh_mining(self) -> None:
        """Clusters of the current train-point embeddings (and mined label negatives, re-weighted graphs) for the
        coming epochs.

        Every process encodes the same texts with the same (DDP-synchronised) weights, so every process derives the
        same clusters, negatives and graph weights without communication; only the sampling seeds differ.
        """
        reweight = self.args.graph_reweight and bool(self.graph_names)
        if self._batch_sampler is None and self.args.mined_negatives <= 0 and not reweight:
            return
        model = self._unwrapped()
        point_embeddings = model.encode(self.data.train.texts, self.processing_class, show_progress=False)
        if self._batch_sampler is not None:
            point_ids = np.asarray(self.train_dataset["point_id"], dtype=np.int64)
            self._batch_sampler.refresh(point_embeddings[point_ids])
        if self.args.mined_negatives > 0:
            label_embeddings = model.encode(self.data.label_texts, self.processing_class)
            index = EmbeddingIndex(label_embeddings.shape[1], backend=self.args.index_backend)
            index.add(label_embeddings)
            self.collator.mined_negatives = hard_negatives(
                point_embeddings, index, self.data.train.labels, k=self.args.mined_negatives
            )
        if reweight:
            self.refresh_graphs(point_embeddings)
        logger.info("RAMEN mining refreshed at epoch %s", self.state.epoch)

    def refresh_graphs(self, point_embeddings: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """Re-weight every training graph by the current encoder and hand the pruned matrices to the collator.

        Each edge of the *original* graph gets ``max(cos(point, anchor), 0)``; the matrix is normalised
        ``D^-1/2 W D^-1/2`` (point and anchor degrees) and edges ``<= graph_min_weight`` are dropped (see
        :func:`hf_compress.ramen.graph_weights.reweight_graph`). Only anchors with an edge are embedded, and an
        anchor whose text is also a train point's text reuses that point's embedding (for citeulike every anchor is
        a train title). Returns and logs the kept edges per graph.
        """
        if not self.graph_names:
            return {}
        start = time.perf_counter()
        model = self._unwrapped()
        point_texts = self.data.train.texts
        if point_embeddings is None:
            point_embeddings = model.encode(point_texts, self.processing_class, show_progress=False)
        text_rows: dict[str, int] = {}
        for row, text in enumerate(point_texts):
            text_rows.setdefault(text, row)
        used = {name: np.unique(matrix.indices) for name, matrix in self.original_graphs.items()}
        missing = sorted({
            self.collator.graphs[name][1][a] for name, columns in used.items() for a in columns.tolist()
            if self.collator.graphs[name][1][a] not in text_rows
        })
        encoded = model.encode(missing, self.processing_class, show_progress=False) if missing else None
        missing_rows = {text: i for i, text in enumerate(missing)}
        stats: dict[str, dict[str, float]] = {}
        for name, matrix in self.original_graphs.items():
            anchor_texts = self.collator.graphs[name][1]
            columns = used[name]
            anchor_embeddings = np.empty((len(columns), point_embeddings.shape[1]), dtype=np.float32)
            for i, a in enumerate(columns.tolist()):
                text = anchor_texts[a]
                row = text_rows.get(text)
                anchor_embeddings[i] = point_embeddings[row] if row is not None else encoded[missing_rows[text]]
            compact = reweight_graph(matrix[:, columns], point_embeddings, anchor_embeddings,
                                     min_weight=self.args.graph_min_weight)
            # back to the full anchor id space (columns is sorted, so indices stay sorted)
            pruned = sp.csr_matrix((compact.data, columns[compact.indices], compact.indptr), shape=matrix.shape)
            self.collator.set_graph(name, pruned, weighted=True)
            kept, total = int(pruned.nnz), int(matrix.nnz)
            stats[name] = {
                "edges": total,
                "edges_kept": kept,
                "kept_fraction": kept / total if total else 0.0,
                "points_with_edges": int((np.diff(matrix.indptr) > 0).sum()),
                "points_with_kept_edges": int((np.diff(pruned.indptr) > 0).sum()),
            }
        self.graph_refreshes += 1
        self.graph_edge_stats = stats
        seconds = time.perf_counter() - start
        for name, entry in stats.items():
            logger.info(
                "RAMEN graph %r re-weighted (refresh %d, epoch %s): kept %d of %d edges (%.1f%%), %d of %d points keep "
                "an edge", name, self.graph_refreshes, self.state.epoch, entry["edges_kept"], entry["edges"],
                100 * entry["kept_fraction"], entry["points_with_kept_edges"], entry["points_with_edges"],
            )
        logger.info("RAMEN graphs re-weighted in %.1f s (%d anchor texts encoded, the others reused point embeddings)",
                    seconds, len(missing))
        logs = {f"graph_{name}_edges_kept": float(entry["edges_kept"]) for name, entry in stats.items()}
        logs.update({f"graph_{name}_kept_fraction": entry["kept_fraction"] for name, entry in stats.items()})
        logs["graph_anchor_texts_encoded"] = float(len(missing))
        logs["graph_reweight_seconds"] = round(seconds, 3)
        self.log(logs)
        return stats

    # -- loss ------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sizes = inputs.pop("segment_sizes").tolist()
        inputs.pop("point_ids", None)
        label_positive = inputs.pop("label_positive")
        linked = {name: inputs.pop(f"graph_{name}_linked") for name in self.graph_names}
        spared = {name: inputs.pop(f"graph_{name}_spared", None) for name in self.graph_names}
        carried = {name: inputs.pop(f"graph_{name}_anchor_label_positive", None) for name in self.graph_names}
        embeddings = model(**inputs).pooler_output
        parts = torch.split(embeddings, sizes, dim=0)
        points, labels = parts[0], parts[1]
        options = {"margin": self.args.margin, "num_negatives": self.args.num_negatives, "temperature": self.args.temperature}
        label_loss = multi_positive_triplet_loss(points, labels, label_positive, **options)
        loss = label_loss
        self._extra_logs["loss_labels"].append(float(label_loss.detach()))
        with torch.no_grad():
            if labels.shape[0] > 0:
                best = (points @ labels.T).argmax(dim=1)
                p_at_1 = label_positive.gather(1, best.unsqueeze(1)).float().mean()
                self._extra_logs["inbatch_p@1"].append(float(p_at_1))
            else:
                p_at_1 = torch.tensor(0.0)
        weights = dict(self.args.graph_weight_map)
        if self.bandit is not None:
            self.bandit.reward(float(self.accelerator.reduce(p_at_1.to(embeddings.device), "mean")))
            weights.update(self.bandit.choose())
        for name, anchors in zip(self.graph_names, parts[2:]):
            graph_loss = graph_regularizer(points, anchors, linked[name], spared_ba=spared[name], **options)
            loss = loss + weights.get(name, 0.0) * graph_loss
            self._extra_logs[f"loss_graph_{name}"].append(float(graph_loss.detach()))
            self._extra_logs[f"graph_weight_{name}"].append(float(weights.get(name, 0.0)))
            if carried[name] is not None:  # the collator adds it only when anchor_label_weight > 0
                # anchors as extra queries, labelled through the graph (an anchor without a carried label adds nothing)
                anchor_loss = multi_positive_triplet_loss(anchors, labels, carried[name], **options)
                loss = loss + self.args.anchor_label_weight * anchor_loss
                self._extra_logs[f"loss_anchor_labels_{name}"].append(float(anchor_loss.detach()))
        if return_outputs:
            return loss, {"embeddings": embeddings}
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._extra_logs:
            for name, values in self._extra_logs.items():
                logs[name] = float(np.mean(values))
            self._extra_logs.clear()
        super().log(logs, start_time)

    # -- evaluation and the classifier stage ------------------------------------------------------------
    def label_embeddings(self, point_embeddings: np.ndarray | None = None) -> np.ndarray:
        """Label vectors of the current encoder as ``label_vectors`` says: the label texts' embeddings, or those mixed
        with the mean embedding of each label's train points (``point_embeddings`` of the train split, if at hand)."""
        model = self._unwrapped()
        vectors = model.encode(self.data.label_texts, self.processing_class)
        if self.args.label_vectors == "text+points":
            if point_embeddings is None:
                point_embeddings = model.encode(self.data.train.texts, self.processing_class)
            vectors = label_vectors_with_points(vectors, point_embeddings, self.data.train.labels,
                                                text_weight=self.args.label_text_weight)
        return vectors

    def build_predictor(self) -> XCPredictor:
        """An ``XCPredictor`` over the current encoder (and classifier, once trained)."""
        return XCPredictor(
            self._unwrapped(),
            self.processing_class,
            self.data.label_texts,
            label_embeddings=self.label_embeddings(),
            label_vectors=self.args.label_vectors,
            classifier=self.classifier,
            fusion_weight=self.fusion_weight,
            index_backend=self.args.index_backend,
            shortlist_size=self.args.shortlist_size,
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """XC metrics (percent) of label retrieval for ``eval_split`` (default: the test split)."""
        split = eval_dataset if isinstance(eval_dataset, XCSplit) else self.eval_split
        ks = tuple(k for k in (1, 3, 5) if k <= self.args.eval_top_k) or (self.args.eval_top_k,)
        metrics = evaluate_xc(
            self.build_predictor(),
            split.texts,
            split.labels,
            train_labels=self.data.train.labels,
            ks=ks,
            filter_pairs=self.data.filter_pairs if split is self.data.test else None,
            propensity_a=self.args.propensity_a,
            propensity_b=self.args.propensity_b,
        )
        if split is self.eval_split:
            self.last_eval_metrics = dict(metrics)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def train_classifier(self, epochs: int | None = None, holdout_fraction: float = 0.05) -> dict[str, float]:
        """One-vs-all stage on the frozen encoder; picks the fusion weight on held-out train points."""
        epochs = self.args.classifier_epochs if epochs is None else epochs
        if epochs <= 0:
            raise ValueError("train_classifier: set classifier_epochs (or pass epochs) to a positive number.")
        model = self._unwrapped()
        points = model.encode(self.data.train.texts, self.processing_class, show_progress=True)
        label_embeddings = self.label_embeddings(points)
        index = EmbeddingIndex(label_embeddings.shape[1], backend=self.args.index_backend)
        index.add(label_embeddings)
        _, shortlist = index.search(points, min(self.args.shortlist_size, len(self.data.label_texts)))
        rng = np.random.default_rng(self.args.seed)
        order = rng.permutation(len(points))
        held = order[: max(1, int(math.ceil(holdout_fraction * len(points))))]
        fit = np.sort(order[len(held) :])
        labels = self.data.train.labels
        classifier, history = train_classifier(
            points[fit], labels[fit], label_embeddings, shortlist[fit], epochs=epochs,
            learning_rate=self.args.classifier_learning_rate, seed=self.args.seed,
        )
        self.classifier = classifier
        predictor = XCPredictor(model, self.processing_class, self.data.label_texts, label_embeddings=label_embeddings,
                                label_vectors=self.args.label_vectors,
                                classifier=classifier, index_backend=self.args.index_backend,
                                shortlist_size=self.args.shortlist_size)
        scores = {}
        if self.args.fusion_weight is not None:
            self.fusion_weight = self.args.fusion_weight
        else:
            for weight in FUSION_GRID:
                predictor.fusion_weight = weight
                result = evaluate_xc(predictor, None, labels[held], ks=(5,), point_embeddings=points[held])
                scores[weight] = result["P@5"]
            self.fusion_weight = max(scores, key=lambda w: (scores[w], -w))
        summary = {"classifier_bce_first": history[0], "classifier_bce_last": history[-1], "fusion_weight": self.fusion_weight}
        summary.update({f"holdout_P@5_fusion_{w}": v for w, v in scores.items()})
        self.log(summary)
        return summary

    def train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            self.train_seconds += time.perf_counter() - start

    def training_summary(self) -> dict:
        """What the model card reports about this run (measured, not typed in)."""
        args = self.args
        backbone = getattr(self._unwrapped().backbone.config, "_name_or_path", "") or self._unwrapped().config.backbone_config.get("model_type")
        return {
            "backbone": backbone, "dataset": self.data.name, "num_train": len(self.data.train),
            "num_labels": self.data.num_labels, "graph_weights": dict(args.graph_weight_map), "margin": args.margin,
            "num_negatives": args.num_negatives, "cluster_size": args.cluster_size,
            "cluster_refresh_epochs": args.cluster_refresh_epochs, "epochs": args.num_train_epochs,
            "batch_size": args.per_device_train_batch_size * max(1, args.world_size), "learning_rate": args.learning_rate,
            "params": sum(p.numel() for p in self._unwrapped().parameters()), "train_seconds": round(self.train_seconds, 1),
            "fusion_weight": self.fusion_weight if self.classifier is not None else None,
            "propensity_a": args.propensity_a, "propensity_b": args.propensity_b,
            "label_vectors": args.label_vectors,
            "graph_reweight": bool(args.graph_reweight), "graph_min_weight": args.graph_min_weight,
            "graph_edges_kept": {name: entry["edges_kept"] for name, entry in self.graph_edge_stats.items()} or None,
        }

    def save_predictor(self, output_dir: str | None = None, command: str | None = None) -> str:
        """Save encoder + tokenizer (sentence-transformers loadable) + label index (+ classifier) in one folder,
        with a model card (README.md) carrying the last test-split metrics."""
        from model_cards import render_ramen_card

        output_dir = output_dir or self.args.output_dir
        if self.is_world_process_zero():
            self.build_predictor().save_pretrained(output_dir)
            card = render_ramen_card(self.last_eval_metrics or {}, self.training_summary(), output_dir=output_dir,
                                     command=command)
            card.save(os.path.join(output_dir, "README.md"))
        return output_dir
