"""High-level DCA-NAS API: data, ``search(...)`` and ``derive(...)``.

``search`` builds ``DCANASTrainingArguments`` + ``DCANASTrainer`` (bilevel first-order search, weights on
one half of the training data, alpha and lambda on the other), trains, derives the genotype and returns a
``SearchResult``; with ``output_dir`` it also saves the derived (untrained) ``DCANASForImageClassification``
and ``search_results.json``. ``derive`` turns saved search results back into a model folder.

Data: real CIFAR-10 from the offline data folder (``load_cifar10``; class-major on disk, shuffled here
with a seed) and scikit-learn's 8x8 digits upsampled (``load_digits_dataset``) for fast tests.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .image_processing_dcanas import CIFAR10_MEAN, CIFAR10_STD
from .jsonio import load_json, save_json

RESULTS_FILE = "search_results.json"


# --------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------


class ImageTensorDataset(Dataset):
    """``{"pixel_values": float [C, H, W], "labels": int}`` items from normalized image tensors."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None = None) -> None:
        if pixel_values.ndim != 4 or len(pixel_values) != len(labels):
            raise ValueError(
                f"Expected pixel_values [N, C, H, W] and N labels, got {list(pixel_values.shape)} and {len(labels)}."
            )
        self.pixel_values = pixel_values.contiguous()
        self.labels = labels.long()
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}

    @property
    def num_labels(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    @property
    def image_size(self) -> int:
        return int(self.pixel_values.shape[-1])

    @property
    def num_channels(self) -> int:
        return int(self.pixel_values.shape[1])

    def subset(self, indices) -> ImageTensorDataset:
        indices = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageTensorDataset(self.pixel_values[indices], self.labels[indices], self.class_names)

    def split(self, fraction: float, seed: int = 0) -> tuple[ImageTensorDataset, ImageTensorDataset]:
        """Seeded random split into (1 - fraction, fraction) parts."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_second = max(1, int(round(len(self) * fraction)))
        return self.subset(sorted(order[n_second:])), self.subset(sorted(order[:n_second]))

    def to_hf_dataset(self):
        """The same data as a ``datasets.Dataset`` (torch format)."""
        import datasets

        return datasets.Dataset.from_dict(
            {"pixel_values": self.pixel_values.numpy(), "labels": self.labels.numpy()}
        ).with_format("torch")


def _normalize(images_uint8: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def load_cifar10(
    split: str = "train", limit: int | None = None, seed: int = 0, image_size: int = 32, data_dir: str | None = None
) -> ImageTensorDataset:
    """CIFAR-10 from ``<data>/cifar10/cifar10_{train,test}.npz`` (images uint8 [N, 32, 32, 3], labels),
    shuffled with ``seed`` (the files are class-major), normalized with the CIFAR-10 mean / std, the first
    ``limit`` images kept (a class-balanced random subset, since the order is shuffled); ``image_size`` < 32
    resizes (bilinear, antialiased) for downsized runs."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}.")
    if data_dir is None:
        from ..data import data_dir as find_data_dir

        folder = find_data_dir("cifar10") / "cifar10"
    else:
        folder = os.path.join(data_dir, "cifar10") if os.path.isdir(os.path.join(data_dir, "cifar10")) else data_dir
    path = os.path.join(str(folder), f"cifar10_{split}.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}.")
    with np.load(path) as data:
        images, labels = data["images"], data["labels"]
    order = np.random.default_rng(seed).permutation(len(labels))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}.")
        order = order[:limit]
    images, labels = images[order], labels[order]
    pixel_values = _normalize(images, CIFAR10_MEAN, CIFAR10_STD)
    if image_size != pixel_values.shape[-1]:
        pixel_values = F.interpolate(pixel_values, size=(image_size, image_size), mode="bilinear", antialias=True,
                                     align_corners=False)
    names_file = os.path.join(str(folder), "classes.txt")
    names = open(names_file, encoding="utf-8").read().split() if os.path.isfile(names_file) else None
    return ImageTensorDataset(pixel_values, torch.from_numpy(labels.astype(np.int64)), names)


def load_digits_dataset(image_size: int = 16, num_channels: int = 3, limit: int | None = None, seed: int = 0) -> ImageTensorDataset:
    """scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) upsampled to ``image_size``, repeated to
    ``num_channels`` channels, standardized; shuffled with ``seed``. Offline, for fast tests."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    if limit is not None:
        order = order[:limit]
    x = torch.from_numpy(digits.images[order].astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    x = x.repeat(1, num_channels, 1, 1)
    return ImageTensorDataset(x, torch.from_numpy(digits.target[order].astype(np.int64)), [str(d) for d in range(10)])


# --------------------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class SearchResult:
    """What a search found, its cost against the budget, and how long it took."""

    search_space: str
    genotype: str
    raw_genotype: str
    metric: str | None
    device_budget: float | None
    search_budget: float | None
    derived_cost: float | None
    raw_derived_cost: float | None
    expected_cost: float | None
    budget_met: bool | None
    raw_budget_met: bool | None
    repaired: bool
    repair_moves: list = field(default_factory=list)
    fill_moves: list = field(default_factory=list)
    lambda_: float | None = None
    alpha_entropy: float | None = None
    alphas: dict = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    final_network: dict = field(default_factory=dict)
    supernet: dict = field(default_factory=dict)
    feasible_range: list | None = None
    steps: int = 0
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lambda"] = data.pop("lambda_")
        return data

    def save(self, path: str) -> str:
        return save_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> SearchResult:
        data = dict(data)
        data["lambda_"] = data.pop("lambda", None)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str) -> SearchResult:
        if os.path.isdir(path):
            path = os.path.join(path, RESULTS_FILE)
        return cls.from_dict(load_json(path, "Search results", "written by `hf-compress nas search`"))

    @property
    def config(self):
        """``DCANASConfig`` of the derived network."""
        from .configuration_dcanas import DCANASConfig

        return DCANASConfig(**{**self.final_network, "search_space": self.search_space, "genotype": self.genotype})


def build_search_trainer(
    train_dataset=None,
    output_dir: str | None = None,
    search_space: str = "nb201",
    budget: float | None = None,
    budget_ratio: float | None = None,
    budget_type: str = "params",
    max_steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 0.025,
    seed: int = 0,
    eval_dataset=None,
    **kwargs,
):
    """The ``DCANASTrainer`` that :func:`search` trains, untrained: for callers that need the supernet itself
    after ``trainer.train()`` (``trainer.supernet``; e.g. to score candidate cells with
    ``perturbation.oneshot_accuracy``). Same arguments as :func:`search`; ``output_dir`` is required."""
    from trainers.dcanas_config import DCANASTrainingArguments
    from trainers.dcanas_trainer import DCANASTrainer

    if output_dir is None:
        raise ValueError("build_search_trainer needs an output_dir (search() makes a temporary one).")
    if train_dataset is None:
        train_dataset = load_cifar10("train", limit=5000, seed=seed, image_size=kwargs.get("image_size", 32))
    defaults = dict(
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size, learning_rate=learning_rate,
        optim="sgd", optim_args="momentum=0.9", weight_decay=3e-4, lr_scheduler_type="cosine", max_grad_norm=5.0,
        logging_steps=max(1, max_steps // 10), save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, dataloader_pin_memory=False,
    )
    for name in ("image_size", "num_channels", "num_labels"):
        if name not in kwargs and hasattr(train_dataset, name):
            kwargs[name] = getattr(train_dataset, name)
    defaults.update(kwargs)
    args = DCANASTrainingArguments(
        output_dir=output_dir, search_space=search_space, budget=budget, budget_ratio=budget_ratio,
        budget_type=budget_type, max_steps=max_steps, seed=seed, **defaults,
    )
    return DCANASTrainer(args=args, train_dataset=train_dataset, eval_dataset=eval_dataset)


def search(
    train_dataset=None,
    search_space: str = "nb201",
    budget: float | None = None,
    budget_ratio: float | None = None,
    budget_type: str = "params",
    output_dir: str | None = None,
    max_steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 0.025,
    seed: int = 0,
    eval_dataset=None,
    save: bool | None = None,
    **kwargs,
) -> SearchResult:
    """Run one DCA-NAS search; ``kwargs`` are any ``DCANASTrainingArguments`` fields (e.g.
    ``channel_bottleneck=1, weight_sharing=False, derived_cells=False, constrained=False`` for plain DARTS,
    ``search_init_channels=8``, ``lug="lug.json"``, ``latency_table="latency.json"``).

    The weight step uses SGD (momentum 0.9, weight decay 3e-4, cosine, DARTS) unless ``optim`` / ``weight_decay``
    / ``lr_scheduler_type`` are given. ``train_dataset`` defaults to 5,000 CIFAR-10 training images.
    """
    import tempfile

    save = output_dir is not None if save is None else save
    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dcanas-")
        output_dir = tmp.name
    try:
        trainer = build_search_trainer(
            train_dataset, output_dir, search_space=search_space, budget=budget, budget_ratio=budget_ratio,
            budget_type=budget_type, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            seed=seed, eval_dataset=eval_dataset, **kwargs,
        )
        trainer.train()
        result = trainer.search_result()
        if save:
            trainer.save_model(output_dir)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def derive(source, output_dir: str | None = None, genotype: str | None = None, **config_overrides):
    """Build the derived network of a search: ``source`` is a search output folder, a ``search_results.json``
    or a ``SearchResult``. Returns ``(genotype, DCANASConfig)``; with ``output_dir`` it saves the (untrained)
    ``DCANASForImageClassification`` there. ``genotype`` overrides the found one (e.g. ``raw_genotype``);
    ``config_overrides`` resize the network (``init_channels``, ``cells_per_stage``, ``num_classes``, ...)."""
    from .configuration_dcanas import DCANASConfig
    from .modeling_dcanas import DCANASForImageClassification

    result = source if isinstance(source, SearchResult) else SearchResult.load(str(source))
    kwargs = {**result.final_network, **{k: v for k, v in config_overrides.items() if v is not None}}
    config = DCANASConfig(search_space=result.search_space, genotype=genotype or result.genotype, **kwargs)
    if output_dir is not None:
        model = DCANASForImageClassification(config)
        model.save_pretrained(output_dir)
        if not isinstance(source, SearchResult) and os.path.abspath(str(source)) != os.path.abspath(output_dir):
            result.save(os.path.join(output_dir, RESULTS_FILE))
    return config.parsed_genotype, config


def wall_clock() -> float:
    return time.perf_counter()
