"""PNG figures for model cards and probing reports (matplotlib's Agg canvas: no display, no global backend).

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot`` so rendering a card never
changes the caller's backend or leaks open figures; sizes are fixed (``figsize`` x ``DPI``) so tests and
the Hub page know what they get.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

DPI = 100
STRUCTURE_FIGSIZE = (9.0, 3.6)  # inches: 900 x 360 px
HEATMAP_PANEL = (3.4, 2.8)  # inches per (model, measure) panel, plus HEATMAP_MARGIN for the colour bar
HEATMAP_MARGIN = 0.8
COMPARISON_FIGSIZE = (6.0, 3.6)


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return str(path)


def plot_pruning_structure(
    num_heads: Sequence[int],
    intermediate_sizes: Sequence[int],
    dense_heads: int,
    dense_intermediate: int,
    path: str | os.PathLike,
) -> str:
    """Bars of kept attention heads and FFN neurons per layer over the dense counts; returns ``path``."""
    figure = _figure(STRUCTURE_FIGSIZE)
    layers = np.arange(len(num_heads))
    panels = (
        ("attention heads", num_heads, dense_heads, "tab:blue"),
        ("FFN neurons", intermediate_sizes, dense_intermediate, "tab:orange"),
    )
    for i, (title, kept, dense, color) in enumerate(panels):
        ax = figure.add_subplot(1, 2, i + 1)
        ax.bar(layers, [dense] * len(layers), color="0.88", edgecolor="0.6", label="dense")
        ax.bar(layers, kept, color=color, label="kept")
        for x, k in zip(layers, kept):
            ax.annotate("removed" if k == 0 else str(k), (x, k), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"kept {title}")
        ax.set_ylim(0, max(dense, 1) * 1.3)
        ax.set_title(f"{title} per layer", fontsize=10)
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    figure.tight_layout()
    return _save(figure, path)


def heatmap_figsize(rows: int, columns: int) -> tuple[float, float]:
    """Inches of a heatmap figure with ``rows`` models and ``columns`` measures (pixels: times ``DPI``)."""
    return HEATMAP_PANEL[0] * columns + HEATMAP_MARGIN, HEATMAP_PANEL[1] * rows


def plot_head_heatmaps(panels: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike) -> str:
    """Layers x heads heatmaps: one row per model (e.g. dense / pruned), one column per attention measure.

    ``panels = {"dense": {"special": [L, H], "current": ..., "rest": ...}, ...}``; NaN cells (removed
    heads) are drawn grey. All panels share the 0..1 colour scale so rows compare directly.
    """
    from matplotlib import colormaps

    rows, columns = len(panels), max(len(m) for m in panels.values())
    figure = _figure(heatmap_figsize(rows, columns))
    cmap = colormaps["viridis"].with_extremes(bad="0.8")
    image = None
    axes = []
    for r, (model, measures) in enumerate(panels.items()):
        for c, (measure, values) in enumerate(measures.items()):
            ax = figure.add_subplot(rows, columns, r * columns + c + 1)
            values = np.asarray(values, float)
            image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_title(f"{model}: {measure}", fontsize=9)
            ax.set_xlabel("kept head slot" if "slot" in model else "head", fontsize=8)
            ax.set_ylabel("layer", fontsize=8)
            ax.set_xticks(range(values.shape[1]))
            ax.set_yticks(range(values.shape[0]))
            ax.tick_params(labelsize=6)
            axes.append(ax)
    figure.tight_layout(rect=(0, 0, 0.92, 1))
    if image is not None:
        colorbar_axes = figure.add_axes((0.93, 0.15, 0.015, 0.7))
        figure.colorbar(image, cax=colorbar_axes, label="attention mass")
    return _save(figure, path)


def plot_removed_vs_score(scores: np.ndarray, removed: np.ndarray, level: str, path: str | os.PathLike) -> str:
    """Dense probing score against what pruning removed (per head or per layer, see ``PruningComparison``)."""
    figure = _figure(COMPARISON_FIGSIZE)
    ax = figure.add_subplot(1, 1, 1)
    scores = np.asarray(scores, float)
    if level == "head":
        removed = np.asarray(removed, bool)
        rng = np.random.default_rng(0)
        for flag, name, color in ((False, "kept", "tab:blue"), (True, "removed", "tab:red")):
            values = scores[removed == flag]
            ax.scatter(np.full(values.shape, float(flag)) + rng.uniform(-0.15, 0.15, values.shape), values,
                       s=14, color=color, alpha=0.7, label=f"{name} ({values.size})")
        ax.set_xticks([0, 1], ["kept heads", "removed heads"])
        ax.set_ylabel("dense mass on special / current tokens")
    else:
        layer_scores = scores.mean(1)
        ax.scatter(layer_scores, removed, color="tab:red")
        for layer, (x, y) in enumerate(zip(layer_scores, removed)):
            ax.annotate(f"L{layer}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlabel("layer mean dense mass on special / current tokens")
        ax.set_ylabel("share of the layer's heads removed")
        ax.set_ylim(-0.05, 1.05)
    ax.set_title("what pruning removed vs dense attention probing", fontsize=10)
    if level == "head":
        ax.legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)
