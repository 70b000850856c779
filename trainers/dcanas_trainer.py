"""``DCANASTrainer``: device-constraint-aware differentiable architecture search as a ``Trainer``.

Bilevel, first-order DARTS: each training step first updates alpha (Adam) and lambda (gradient ascent,
clamped >= 0) on a batch of the held-out validation split with
``L_val + lambda * (k_s(alpha) / K_s - 1)`` (``K_s`` = LUG(K_d), the search budget; lambda's gradient is
the relative violation ``k_s / K_s - 1``, or with ``lambda_signal="derived"`` the larger of that and the
current genotype's ``derived / K_s - 1``, so lambda keeps rising while the discrete cell is over (with
``budget_mode="target"``: the genotype's violation alone);
``budget_mode="target"`` leaves lambda's sign free, so an under-budget cell is pushed up to the budget as
an over-budget one is pushed down - TuNAS's absolute-value reward in Lagrangian form), then takes the
Trainer's normal weight step on a training batch (alpha detached). The weight optimizer holds only the
supernet weights; alpha and lambda have their own optimizers (their values are parameters of the model,
so checkpoints keep them; each checkpoint also holds ``arch_optimizer.pt``: alpha's Adam moments, lambda's
optimizer and the position in the validation stream, so a resumed search continues exactly).

Under ``accelerate launch`` (DDP) the weight step is the Trainer's, synchronised by DDP; every process draws the
same validation batches (same seed) and takes the same alpha / lambda step, so alpha, lambda and the genotype
stay identical across processes without extra communication (tested with 2 CPU processes).

Logged with the loss: ``val_loss``, ``alpha_entropy``, ``expected_cost`` (k_s(alpha)),
``derived_cost`` (the current genotype's exact cost), ``search_budget`` / ``device_budget``, ``lambda``,
``violation``. ``derive()`` returns the genotype and its ``DCANASConfig``; ``save_model()`` writes the
derived (untrained) ``DCANASForImageClassification`` and ``search_results.json``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from transformers import Trainer

from hf_compress.nas.constraint import BudgetConstraint, CostModel, LookUpGraph, final_network_config
from hf_compress.nas.latency import LatencyTable, network_signature
from hf_compress.nas.latency_fit import fit_measured_latency, network_measurer, require_this_device
from hf_compress.nas.perturbation import held_out_batches, perturbation_scores, scores_to_probabilities
from hf_compress.nas.proxy import naswot_rerank, nb201_top_cells
from hf_compress.nas.modeling_dcanas import DCANASForImageClassification
from hf_compress.nas.search import RESULTS_FILE, SearchResult, peak_rss_mb
from hf_compress.nas.supernet import DCANASSupernet, genotype_from_probs

from .dcanas_config import DCANASTrainingArguments

logger = logging.getLogger(__name__)
ARCH_STATE_FILE = "arch_optimizer.pt"  # alpha / lambda optimizer state and validation position, per checkpoint


def split_dataset(dataset, fraction: float, seed: int):
    """Seeded random (train, val) split; ``val`` gets ``fraction`` of the examples."""
    n = len(dataset)
    if n < 2:
        raise ValueError(f"The training set has {n} example(s); the search needs >= 2 to split off a validation part.")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    val, train = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if hasattr(dataset, "select"):
        return dataset.select(train), dataset.select(val)
    if hasattr(dataset, "subset"):
        return dataset.subset(train), dataset.subset(val)
    return Subset(dataset, train), Subset(dataset, val)


class DCANASTrainer(Trainer):
    """Search a cell under a device budget (see the module docstring).

    ``model``: a ``DCANASSupernet`` (default: built from ``args``). ``train_dataset`` is split into the
    weight part and the alpha part (``val_fraction``) unless ``val_dataset`` is given.
    """

    def __init__(self, model=None, args: DCANASTrainingArguments | None = None, train_dataset=None, eval_dataset=None,
                 val_dataset=None, **kwargs) -> None:
        if not isinstance(args, DCANASTrainingArguments):
            raise TypeError("DCANASTrainer needs args=DCANASTrainingArguments(...) (it holds the space and the budget).")
        if train_dataset is None:
            raise ValueError("DCANASTrainer needs a train_dataset (split into weight and architecture halves).")
        if model is None:
            torch.manual_seed(args.seed)
            model = DCANASSupernet(**args.supernet_kwargs())
        if not isinstance(model, DCANASSupernet):
            raise TypeError(f"DCANASTrainer searches a DCANASSupernet, got {type(model).__name__}.")
        if model.settings.search_space != args.search_space:
            raise ValueError(
                f"The supernet searches the {model.settings.search_space} space but args.search_space is "
                f"{args.search_space!r}."
            )
        self._check_data(model, train_dataset)
        self.final_config = final_network_config(args.search_space, **args.final_config_kwargs())
        self.latency_table = LatencyTable.load(args.latency_table) if args.latency_table else None
        if args.latency_fit and args.constrained:
            require_this_device(self.latency_table, f"The latency table {args.latency_table}")
        metric = args.metric
        self.cost_model = CostModel(self.final_config, metric, self.latency_table, args.latency_backend,
                                    exclude_none=model.settings.exclude_none)
        self.params_model = CostModel(self.final_config, "params")
        self.macs_model = CostModel(self.final_config, "macs")
        self.feasible_range = self.cost_model.feasible_range()
        self.device_budget = self.search_budget = None
        self.lug = None
        if args.constrained:
            device_budget = args.budget if args.budget is not None else self.cost_model.budget_from_ratio(args.budget_ratio)
            self.device_budget = self.cost_model.check_budget(device_budget, "device budget")
            self.search_budget = self._search_budget(args, self.device_budget)
            model.constraint = BudgetConstraint(self.cost_model, self.search_budget, args.lambda_init)
        if val_dataset is None:
            train_dataset, val_dataset = split_dataset(train_dataset, args.val_fraction, args.seed)
        self.val_dataset = val_dataset
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._arch_optimizer = None
        self._lambda_optimizer = None
        self._val_iterator = None
        self._val_epoch = 0
        self._val_used = 0   # batches taken from the current validation loader
        self._val_skip = 0   # batches to skip when a resumed search recreates that loader
        self._extra_logs: dict[str, list[float]] = defaultdict(list)
        self.history: list[dict] = []
        self.search_seconds: float | None = None
        self.derivation_seconds = 0.0  # perturbation / NASWOT scoring, counted in the search's wall time
        # (alpha key, ...) of the last computation of each
        self._perturbation_cache = self._fit_cache = self._naswot_cache = None
        self._derived = None
        if args.constrained:
            lo, hi = self.feasible_range
            logger.info(
                "DCA-NAS %s budget: device %s, search %s (feasible %s .. %s)", metric,
                self.cost_model.format(self.device_budget), self.cost_model.format(self.search_budget),
                self.cost_model.format(lo), self.cost_model.format(hi),
            )

    # -- setup ---------------------------------------------------------------------------------------
    @staticmethod
    def _check_data(model: DCANASSupernet, dataset) -> None:
        if len(dataset) == 0:
            raise ValueError("The training set is empty.")
        item = dataset[0]
        if "pixel_values" not in item:
            raise ValueError(f"Dataset items need 'pixel_values' and 'labels'; got keys {sorted(item)}.")
        shape = tuple(torch.as_tensor(item["pixel_values"]).shape)
        s = model.settings
        if shape != (s.num_channels, s.image_size, s.image_size):
            raise ValueError(
                f"Images are {list(shape)} but the supernet expects [{s.num_channels}, {s.image_size}, {s.image_size}] "
                "(set image_size / num_channels in DCANASTrainingArguments or resize the data)."
            )

    def _search_budget(self, args: DCANASTrainingArguments, device_budget: float) -> float:
        if not args.lug:
            return device_budget
        self.lug = LookUpGraph.load(args.lug)
        self.lug.check_compatible(args.search_space, self.cost_model.metric, network_signature(self.final_config))
        budget = self.lug.search_budget_for(device_budget)
        lo, hi = self.feasible_range
        clamped = min(max(budget, lo + 1e-3 * (hi - lo)), hi)
        if clamped != budget:
            warnings.warn(
                f"The look-up graph maps the device budget {device_budget:.6g} to {budget:.6g}, outside the "
                f"feasible range; searching at {clamped:.6g}.",
                stacklevel=3,
            )
        logger.info("LUG %s: device budget %.6g -> search budget %.6g", args.lug, device_budget, clamped)
        return clamped

    def create_optimizer(self, model=None):
        """The Trainer's optimizer over the supernet *weights* only (alpha and lambda have their own)."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        supernet = self.accelerator.unwrap_model(opt_model) if hasattr(self, "accelerator") else opt_model
        decay = set(self.get_decay_parameter_names(opt_model))
        named = [(n, p) for n, p in supernet.named_weight_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
        return self.optimizer

    @property
    def supernet(self) -> DCANASSupernet:
        return self.accelerator.unwrap_model(self.model)

    def _arch_optimizers(self):
        if self._arch_optimizer is None:
            supernet = self.supernet
            args = self.args
            self._arch_optimizer = torch.optim.Adam(
                supernet.arch_parameters(), lr=args.arch_learning_rate, betas=(args.arch_beta1, 0.999),
                weight_decay=args.arch_weight_decay,
            )
            if args.constrained:
                self._lambda_optimizer = torch.optim.SGD(
                    [supernet.constraint.lambda_], lr=args.lambda_learning_rate, maximize=True
                )
        return self._arch_optimizer, self._lambda_optimizer

    def _val_loader(self) -> DataLoader:
        dataset = self.val_dataset
        collator = self.data_collator
        if hasattr(dataset, "column_names"):  # datasets.Dataset: drop columns the model does not take
            dataset = self._remove_unused_columns(dataset, description="architecture")
        generator = torch.Generator()
        generator.manual_seed(self.args.seed + 1000 + self._val_epoch)
        self._val_epoch += 1
        batch_size = self.args.per_device_train_batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collator,
                          drop_last=len(dataset) >= batch_size, num_workers=0)

    def _next_val_batch(self) -> dict:
        if self._val_iterator is None:
            self._val_iterator = iter(self._val_loader())
            self._val_used = 0
            for _ in range(self._val_skip):  # resumed: back to where the checkpointed search was
                next(self._val_iterator, None)
                self._val_used += 1
            self._val_skip = 0
        try:
            batch = next(self._val_iterator)
        except StopIteration:
            self._val_iterator = iter(self._val_loader())
            self._val_used = 0
            batch = next(self._val_iterator)
        self._val_used += 1
        return self._prepare_inputs(batch)

    # -- checkpoints: alpha's optimizer and the validation stream travel with the Trainer's own state ----------
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if not self.args.should_save:
            return
        state = {
            "arch_optimizer": None if self._arch_optimizer is None else self._arch_optimizer.state_dict(),
            "lambda_optimizer": None if self._lambda_optimizer is None else self._lambda_optimizer.state_dict(),
            "val_epoch": self._val_epoch,
            "val_used": self._val_used if self._val_iterator is not None else 0,
        }
        torch.save(state, os.path.join(output_dir, ARCH_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, ARCH_STATE_FILE)
        if not os.path.isfile(path):
            warnings.warn(
                f"{checkpoint} has no {ARCH_STATE_FILE}: alpha's Adam moments and the validation batch order "
                "restart from scratch (the checkpoint was written by an older hf-compress or copied without it).",
                stacklevel=2,
            )
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        arch_opt, lambda_opt = self._arch_optimizers()
        if state.get("arch_optimizer") is not None:
            arch_opt.load_state_dict(state["arch_optimizer"])
        if lambda_opt is not None and state.get("lambda_optimizer") is not None:
            lambda_opt.load_state_dict(state["lambda_optimizer"])
        self._val_iterator = None
        if state["val_epoch"] > 0:  # the loader in use was made with the previous epoch's seed
            self._val_epoch, self._val_skip = state["val_epoch"] - 1, state["val_used"]

    # -- the bilevel step --------------------------------------------------------------------------------
    def _arch_active(self) -> bool:
        warmup = int(self.args.arch_warmup_ratio * max(1, self.state.max_steps or 0))
        return self.state.global_step >= warmup

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._arch_active():
            self.arch_step(model)
        return super().training_step(model, inputs, num_items_in_batch)

    def arch_step(self, model=None) -> dict[str, float]:
        """One alpha (and lambda) update on a validation batch; returns the logged values."""
        model = self.model if model is None else model
        supernet = self.supernet
        arch_opt, lambda_opt = self._arch_optimizers()
        model.train()
        batch = self._next_val_batch()
        outputs = model(**batch, arch_grad=True)
        val_loss = outputs.loss
        total = val_loss
        params = supernet.arch_parameters()
        logs = {"val_loss": float(val_loss.detach())}
        lambda_signal = None
        if self.args.constrained:
            constraint = supernet.constraint
            violation = constraint.violation(supernet.probabilities(detach=False))
            total = total + constraint.lambda_.detach() * violation
            lambda_signal = float(violation.detach())
            logs["violation"] = lambda_signal
            logs["expected_cost"] = float(self.cost_model.expected(supernet.probabilities()))
            if self.args.lambda_signal == "derived":
                derived = self.cost_model.derived(supernet.genotype()) / constraint.search_budget - 1.0
                # ceiling: rise while either is over; target: follow the discrete cell both ways
                lambda_signal = derived if self.args.budget_mode == "target" else max(lambda_signal, derived)
        grads = torch.autograd.grad(total, params, allow_unused=True)
        for param, grad in zip(params, grads):
            param.grad = torch.zeros_like(param) if grad is None else grad.detach()
        arch_opt.step()
        arch_opt.zero_grad(set_to_none=True)
        if lambda_opt is not None:
            # d/d lambda of lambda * violation: ascend while over budget, descend (to >= 0) while under; the
            # step is clipped to +-1 relative violation so a far-off genotype cannot fling lambda around
            signal = min(1.0, max(-1.0, lambda_signal))
            supernet.constraint.lambda_.grad = torch.tensor(signal, dtype=supernet.constraint.lambda_.dtype)
            lambda_opt.step()
            lambda_opt.zero_grad(set_to_none=True)
            if self.args.budget_mode == "upper":
                supernet.constraint.clamp_()
            logs["lambda"] = float(supernet.constraint.lambda_.detach())
        for name, value in logs.items():
            self._extra_logs[name].append(value)
        return logs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The weight step's loss: cross-entropy on a training batch with alpha detached."""
        outputs = model(**inputs, arch_grad=False)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    # -- logging -------------------------------------------------------------------------------------------
    def current_costs(self) -> dict[str, float]:
        supernet = self.supernet
        genotype = supernet.genotype()
        probs = supernet.probabilities()
        out = {
            "alpha_entropy": supernet.alpha_entropy(),
            "derived_cost": self.cost_model.derived(genotype),
            "expected_cost": float(self.cost_model.expected(probs)),
        }
        if self.args.constrained:
            out.update(search_budget=self.search_budget, device_budget=self.device_budget,
                       **{"lambda": float(supernet.constraint.lambda_.detach())})
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for name, values in self._extra_logs.items():
                logs[name] = float(np.mean(values))
            self._extra_logs.clear()
            current = self.current_costs()
            current.pop("expected_cost") if "expected_cost" in logs else None  # keep the interval's mean
            logs.update(current)
            self.history.append({"step": self.state.global_step, **logs, "genotype": str(self.supernet.genotype())})
        super().log(logs, start_time)

    # -- results -------------------------------------------------------------------------------------------
    def train(self, *args, **kwargs):
        started = time.perf_counter()
        output = super().train(*args, **kwargs)
        self.search_seconds = time.perf_counter() - started
        self._derived = None
        return output

    def derive(self, enforce_budget: bool | None = None):
        """``(genotype, DCANASConfig)`` of the final network from the current alpha (NB201: argmax per edge;
        DARTS: top-2 incoming edges per node). With a budget and ``enforce_budget`` (default
        ``args.enforce_budget``), an argmax genotype over the device budget is repaired (``search_result()``
        reports the raw one and the moves); with ``args.fill_budget`` a genotype under the budget is then moved
        to costlier ops while it still fits (``fill_moves``). With ``args.latency_fit`` the candidate is measured
        on this device and the table budget corrected until the measured latency is within
        ``latency_tolerance`` under the budget, or at most ``latency_overshoot`` over it when nothing lands under
        (``hf_compress.nas.latency_fit``)."""
        enforce = self.args.enforce_budget if enforce_budget is None else enforce_budget
        supernet = self.supernet
        if self.args.derivation == "perturbation":
            probs = self._perturbation_probabilities()
            raw = genotype_from_probs(supernet.space, probs, supernet.settings.exclude_none)
        else:
            raw = supernet.genotype()
            probs = supernet.probabilities()
        genotype, moves, fill_moves = raw, [], []
        if self.args.derivation == "naswot":
            # the candidates are enumerated within the budget, so nothing needs repairing or filling
            budget = self.device_budget if self.args.constrained and enforce else None
            genotype = self._naswot_choice(probs, budget)
        elif self.args.constrained:
            genotype, moves, fill_moves = self.cost_model.derive_within(
                raw, probs, self.device_budget, repair=enforce, fill=self.args.fill_budget)
        fit = None
        if self.args.constrained and enforce and self.args.latency_fit:
            fit = self._latency_fit(raw, probs)
            genotype = fit.genotype
        config = final_network_config(self.args.search_space, genotype=genotype, **self.args.final_config_kwargs())
        self._derived = (raw, genotype, moves, fill_moves, fit)
        return config.parsed_genotype, config

    def _alpha_key(self) -> tuple:
        """Identifies the current alpha: the perturbation scores and the latency fit are computed once per alpha."""
        return tuple(p.detach().cpu().numpy().tobytes() for p in self.supernet.alphas.values())

    def _perturbation_probabilities(self) -> dict[str, torch.Tensor]:
        """Pseudo-probabilities from perturbation scores of the current supernet (computed once per alpha)."""
        supernet = self.supernet
        key = self._alpha_key()
        cached = self._perturbation_cache
        if cached is None or cached[0] != key:
            batches = held_out_batches(self.val_dataset, self.args.perturbation_images,
                                       self.args.per_device_eval_batch_size * 4)
            scores, trace = perturbation_scores(supernet, batches, seed=self.args.seed,
                                                exclude_none=supernet.settings.exclude_none)
            self.derivation_seconds = trace["seconds"]
            logger.info("perturbation scores: %d evaluations on %d images in %.1f s; supernet accuracy %.3f -> %.3f "
                        "with every edge fixed", trace["evaluations"], self.args.perturbation_images,
                        trace["seconds"], trace["base_accuracy"][0], trace["final_accuracy"])
            cached = (key, scores, trace)
            self._perturbation_cache = cached
        return scores_to_probabilities(cached[1], self.args.perturbation_temperature)

    def _naswot_choice(self, probs: dict[str, torch.Tensor], budget: float | None):
        """Alpha's ``naswot_top_k`` most probable cells within ``budget``, the one whose untrained final network has
        the highest NASWOT score (computed once per alpha and budget)."""
        key = (self._alpha_key(), budget)
        cached = self._naswot_cache
        if cached is None or cached[0] != key:
            args = self.args
            candidates = nb201_top_cells(self.cost_model, probs, budget, args.naswot_top_k,
                                         exclude_none=self.supernet.settings.exclude_none)
            if not candidates:
                raise ValueError(f"No NAS-Bench-201 cell fits the budget {self.cost_model.format(budget)}; the "
                                 f"feasible range is {self.cost_model.format(self.cost_model.feasible_range()[0])} "
                                 f"and up.")
            network = args.final_config_kwargs()
            pixels = torch.cat([x for x, _ in held_out_batches(self.val_dataset, args.naswot_images)])
            size = network["image_size"]
            if pixels.shape[-1] != size:  # a search at a lower resolution than the final network's
                pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            chosen, trace = naswot_rerank(candidates, network, pixels, seed=args.seed,
                                          search_space=args.search_space)
            self.derivation_seconds = trace["seconds"]
            logger.info("naswot: %d candidates scored on %d images in %.1f s; chose alpha's #%d",
                        len(candidates), trace["images"], trace["seconds"], trace["chosen"] + 1)
            cached = (key, chosen, trace)
            self._naswot_cache = cached
        return cached[1]

    def _latency_fit(self, raw, probs):
        """Measure candidates until one lands in the tolerance window (cached per raw genotype and alpha)."""
        key = (self._alpha_key(), self.device_budget)
        cached = self._fit_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        args = self.args
        measure = network_measurer(args.search_space, args.final_config_kwargs(), args.latency_backend,
                                   args.latency_fit_repeats, self.latency_table.fingerprint.get("threads", 1))
        fit = fit_measured_latency(self.cost_model, raw, probs, self.device_budget, measure,
                                   tolerance=args.latency_tolerance, max_rounds=args.latency_fit_rounds,
                                   fill=args.fill_budget, overshoot=args.latency_overshoot)
        self._fit_cache = (key, fit)
        return fit

    def search_result(self, enforce_budget: bool | None = None) -> SearchResult:
        genotype, config = self.derive(enforce_budget)
        raw, _, moves, fill_moves, fit = self._derived
        supernet = self.supernet
        cm = self.cost_model
        derived = cm.derived(genotype)
        raw_cost = cm.derived(raw)
        constrained = self.args.constrained
        final_network = {k: v for k, v in self.args.final_config_kwargs().items() if v is not None}
        final_network.update(init_channels=config.init_channels, image_size=config.image_size,
                             num_channels=config.num_channels, num_classes=config.num_labels)
        if config.search_space == "nb201":
            final_network["cells_per_stage"] = config.cells_per_stage
        else:
            final_network["num_layers"] = config.num_layers
        extra = {}
        if self.lug is not None:
            extra["lug"] = self.args.lug
        if self.args.derivation == "perturbation":
            _, scores, trace = self._perturbation_cache
            extra["derivation"] = {
                "method": "perturbation", "alpha_genotype": str(supernet.genotype()), "seconds": trace["seconds"],
                "evaluations": trace["evaluations"], "images": self.args.perturbation_images,
                "order": trace["order"], "base_accuracy": trace["base_accuracy"],
                "final_accuracy": trace["final_accuracy"],
                "scores": {k: [[None if not np.isfinite(x) else float(x) for x in row] for row in v.tolist()]
                           for k, v in scores.items()},
            }
        if self.args.derivation == "naswot":
            _, _, trace = self._naswot_cache
            extra["derivation"] = {"method": "naswot", "alpha_genotype": str(supernet.genotype()), **trace}
        if fit is not None:
            extra["latency_fit"] = fit.to_dict()
            extra["measured_latency_ms"] = fit.measured_ms
        if self.latency_table is not None:
            extra["latency_table"] = self.args.latency_table
            extra["latency_fingerprint"] = self.latency_table.fingerprint
            extra["latency_backend"] = self.args.latency_backend
        return SearchResult(
            search_space=self.args.search_space,
            genotype=config.genotype,
            raw_genotype=str(raw),
            metric=cm.metric,
            device_budget=self.device_budget,
            search_budget=self.search_budget,
            derived_cost=derived,
            raw_derived_cost=raw_cost,
            expected_cost=float(cm.expected(supernet.probabilities())),
            # with latency_fit the device's measurement decides, not the table's estimate
            budget_met=((fit.measured_ms if fit is not None else derived) <= self.device_budget) if constrained else None,
            raw_budget_met=(raw_cost <= self.device_budget) if constrained else None,
            repaired=bool(moves),
            repair_moves=moves,
            fill_moves=fill_moves,
            lambda_=float(supernet.constraint.lambda_.detach()) if constrained else None,
            alpha_entropy=supernet.alpha_entropy(),
            alphas={k: v.detach().cpu().tolist() for k, v in supernet.alphas.items()},
            params=int(self.params_model.derived(genotype)),
            macs=int(self.macs_model.derived(genotype)),
            final_network=final_network,
            supernet=supernet.settings.to_dict(),
            feasible_range=list(self.feasible_range),
            steps=int(self.state.global_step),
            wall_time_s=float(self.search_seconds or 0.0) + float(self.derivation_seconds),
            peak_rss_mb=peak_rss_mb(),
            history=list(self.history),
            extra=extra,
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (``_internal_call``) keep the supernet; otherwise write the derived network
        (``DCANASForImageClassification``, untrained, with its image processor) and ``search_results.json``."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        output_dir = self.args.output_dir if output_dir is None else output_dir
        result = self.search_result()
        if not self.args.should_save:
            return None
        os.makedirs(output_dir, exist_ok=True)
        model = DCANASForImageClassification(result.config)
        model.save_pretrained(output_dir)
        result.save(os.path.join(output_dir, RESULTS_FILE))
        from model_cards import render_dcanas_card

        render_dcanas_card(result.config, result.to_dict(), output_dir=output_dir).save(os.path.join(output_dir, "README.md"))
        logger.info("Saved the derived network %s to %s", result.genotype, output_dir)
        return None


__all__ = ["DCANASTrainer", "split_dataset"]
