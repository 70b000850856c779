"""The NAS-Bench-201 results table (``nb201/nb201_mini.csv``): accuracy of any cell without training it.

The offline table holds all 15,625 cells with their CIFAR-10 / CIFAR-100 / ImageNet16-120 accuracies
after NAS-Bench-201's **12-epoch** schedule (see the data folder's PROVENANCE.md; the best CIFAR-10 test
accuracy there is 89.16%, not the ~94.4% of the 200-epoch runs). Costs come from our closed-form model of
the standard NAS-Bench-201 network (C=16, N=5, 32x32 input, ``num_classes`` outputs; 10 by default).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .cost import Cost, nb201_network_cost
from .spaces import NB201_LARGEST, NB201_SMALLEST, NB201Genotype

TABLE_FILE = Path("nb201") / "nb201_mini.csv"
DEFAULT_METRIC = "cifar10_test_acc_12ep"
ARCH_COLUMN = "arch_str"
INDEX_COLUMN = "arch_index"


@dataclass(frozen=True)
class NB201Entry:
    index: int
    genotype: NB201Genotype
    accuracies: dict[str, float]

    @property
    def arch_str(self) -> str:
        return self.genotype.to_string()


class NB201Table:
    """All NAS-Bench-201 cells with their accuracies (percent) and our cost model's params / MACs."""

    def __init__(self, entries: list[NB201Entry], num_classes: int = 10, source: str | None = None) -> None:
        if not entries:
            raise ValueError("An empty NAS-Bench-201 table.")
        self.entries = entries
        self.num_classes = num_classes
        self.source = source
        self.metrics = tuple(entries[0].accuracies)
        self._by_arch = {entry.arch_str: entry for entry in entries}

    def __len__(self) -> int:
        return len(self.entries)

    def _entry(self, genotype: NB201Genotype | str) -> NB201Entry:
        if isinstance(genotype, str):
            genotype = NB201Genotype.parse(genotype)
        try:
            return self._by_arch[genotype.to_string()]
        except KeyError:
            raise KeyError(f"{genotype} is not in the NAS-Bench-201 table ({self.source}).") from None

    def lookup(self, genotype: NB201Genotype | str) -> dict[str, float]:
        """``{column: accuracy}`` of one cell (a genotype or its string)."""
        return dict(self._entry(genotype).accuracies)

    def index_of(self, genotype: NB201Genotype | str) -> int:
        return self._entry(genotype).index

    def _check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise ValueError(f"Unknown NAS-Bench-201 metric {metric!r}; columns: {', '.join(self.metrics)}.")

    @cached_property
    def _cell_costs(self) -> dict[str, Cost]:
        # The network cost depends only on the multiset of ops in the cell: compute each multiset once.
        by_ops: dict[tuple[str, ...], Cost] = {}
        costs = {}
        for entry in self.entries:
            key = tuple(sorted(entry.genotype.ops))
            if key not in by_ops:
                by_ops[key] = nb201_network_cost(entry.genotype, num_classes=self.num_classes)
            costs[entry.arch_str] = by_ops[key]
        return costs

    def cost(self, genotype: NB201Genotype | str) -> Cost:
        """Params / MACs of the standard network built from this cell."""
        return self._cell_costs[self._entry(genotype).arch_str]

    def best(self, metric: str = DEFAULT_METRIC) -> tuple[NB201Entry, float]:
        self._check_metric(metric)
        entry = max(self.entries, key=lambda e: e.accuracies[metric])
        return entry, entry.accuracies[metric]

    def best_within_budget(
        self, budget: float, cost: str = "params", metric: str = DEFAULT_METRIC
    ) -> tuple[NB201Entry, float] | None:
        """The most accurate cell (by ``metric``) whose network ``cost`` ('params' or 'macs') is <= ``budget``;
        ``None`` when no cell fits. Ties go to the cheaper, then the lower-index cell."""
        self._check_metric(metric)
        Cost().get(cost)
        best = None
        for entry in self.entries:
            value = self._cell_costs[entry.arch_str].get(cost)
            if value > budget:
                continue
            key = (entry.accuracies[metric], -value, -entry.index)
            if best is None or key > best[0]:
                best = (key, entry)
        return None if best is None else (best[1], best[1].accuracies[metric])

    def regret(self, genotype: NB201Genotype | str, budget: float, cost: str = "params", metric: str = DEFAULT_METRIC) -> float:
        """Best accuracy within the budget minus the accuracy of ``genotype`` (percentage points)."""
        best = self.best_within_budget(budget, cost, metric)
        if best is None:
            raise ValueError(f"No NAS-Bench-201 cell fits {cost} <= {budget}.")
        return best[1] - self.lookup(genotype)[metric]

    @property
    def largest(self) -> NB201Genotype:
        return NB201_LARGEST

    @property
    def smallest(self) -> NB201Genotype:
        return NB201_SMALLEST

    def cost_range(self, cost: str = "params") -> tuple[int, int]:
        values = [c.get(cost) for c in self._cell_costs.values()]
        return min(values), max(values)


def table_path(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        return Path(path)
    from ..data import data_dir

    return data_dir(str(TABLE_FILE)) / TABLE_FILE


def load_nb201_table(path: str | os.PathLike | None = None, num_classes: int = 10) -> NB201Table:
    """Read the table (default: ``<data_dir>/nb201/nb201_mini.csv``; ``HF_COMPRESS_DATA`` sets the data dir).

    Accuracy columns are every column other than ``arch_index`` / ``arch_str``.
    """
    file = table_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"NAS-Bench-201 table not found: {file}.")
    entries = []
    with open(file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if ARCH_COLUMN not in columns:
            raise ValueError(f"{file}: no {ARCH_COLUMN!r} column (columns: {columns}).")
        metrics = [c for c in columns if c not in (ARCH_COLUMN, INDEX_COLUMN)]
        for row_number, row in enumerate(reader):
            try:
                genotype = NB201Genotype.parse(row[ARCH_COLUMN])
                accuracies = {c: float(row[c]) for c in metrics}
            except (ValueError, TypeError) as err:
                raise ValueError(f"{file}, data row {row_number + 1}: {err}") from None
            index = int(row[INDEX_COLUMN]) if row.get(INDEX_COLUMN) not in (None, "") else row_number
            entries.append(NB201Entry(index, genotype, accuracies))
    return NB201Table(entries, num_classes=num_classes, source=str(file))
