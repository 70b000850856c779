"""Per-op latency table measured on this device (torch and onnxruntime), and network latency estimates.

Every candidate op of the final network is measured alone at the resolution and width it runs at there
(batch 1, eval mode, median of ``repeats`` runs after ``warmup``): exported to ONNX by itself and run by an
onnxruntime session, and run by torch under ``inference_mode``. The per-call overhead of each backend
(an identity graph at the same input size) is measured too and subtracted from each op, because in the
whole network the ops run inside one session call; the cost of one tensor addition at that size (a graph
adding a constant, minus the call overhead) is added back, since in a cell each op's output is summed
into its node (a skip connection then costs one addition). The skeleton (stem, reduction blocks,
preprocessing, classifier: the network with every op ``none``) is measured as a whole network.

Estimated latency of a derived network = skeleton + sum of its ops' entries (``estimate_latency``);
``measure_network_latency`` measures the real network for comparison (``latency_estimate_error``).
``calibrate_latency_table`` fits ``measured ~ a * estimate + b`` on a few whole networks and folds it into
the table (still additive).

Tables are JSON with a device fingerprint (CPU model, cores, threads, torch / onnxruntime versions);
loading a table made on another device warns and shows both fingerprints. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import io
import os
import platform
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..evaluation import ort_session
from .configuration_dcanas import DCANASConfig
from .jsonio import load_json, save_json
from .ops import build_op
from .spaces import get_space

TABLE_FORMAT = "dcanas-latency-table/1"
BACKENDS = ("onnxruntime", "torch")
FINGERPRINT_KEYS = ("cpu_model", "machine", "logical_cores", "threads", "torch", "onnxruntime")


class LatencyTableDeviceWarning(UserWarning):
    """The latency table was measured on a different device / software stack than this one."""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_fingerprint(threads: int = 1) -> dict:
    """What the latency of an op depends on, besides the op: CPU, cores, threads and runtimes."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "threads": int(threads),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "python": platform.python_version(),
        "system": platform.system(),
    }


def fingerprint_mismatch(recorded: dict, current: dict) -> list[str]:
    return [k for k in FINGERPRINT_KEYS if recorded.get(k) != current.get(k)]


def slot_key(op: str, C: int, stride: int, H: int) -> str:
    return f"{op}|C={C}|s={stride}|H={H}"


def config_with_genotype(config: DCANASConfig, genotype) -> DCANASConfig:
    """A copy of ``config`` with another genotype of the same space."""
    from .spaces import parse_genotype

    out = copy.deepcopy(config)
    out.genotype = parse_genotype(genotype, config.search_space).to_string()
    return out


def network_signature(config: DCANASConfig) -> dict:
    """The parts of a config the table depends on (genotype excluded)."""
    sig = {"search_space": config.search_space, "init_channels": config.init_channels,
           "image_size": config.image_size, "num_channels": config.num_channels, "num_labels": config.num_labels}
    if config.search_space == "nb201":
        sig["cells_per_stage"] = config.cells_per_stage
    else:
        sig.update(num_layers=config.num_layers, stem_multiplier=config.stem_multiplier)
    return sig


# --------------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------------


@contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def median_ms(fn, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def export_onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of ``module(example)`` (TorchScript exporter; the dynamo exporter as a fallback)."""
    module = module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["pixel_values"],
                              output_names=["output"], opset_version=17)
        except Exception:  # noqa: BLE001  (older / newer torch without the TorchScript exporter)
            buffer = io.BytesIO()
            torch.onnx.export(module, (example,), buffer, dynamo=True, input_names=["pixel_values"],
                              output_names=["output"])
    return buffer.getvalue()


def measure_module(
    module: nn.Module, example: torch.Tensor, backends=BACKENDS, repeats: int = 50, warmup: int = 10, threads: int = 1
) -> dict[str, float]:
    """``{backend_ms: median}`` of one forward of ``module`` on ``example`` (batch 1)."""
    module = module.eval()
    out = {}
    if "onnxruntime" in backends:
        session = ort_session(export_onnx(module, example), threads)
        name = session.get_inputs()[0].name
        feed = {name: example.numpy()}
        out["onnxruntime"] = median_ms(lambda: session.run(None, feed), repeats, warmup)
    if "torch" in backends:
        with torch_threads(threads), torch.inference_mode():
            out["torch"] = median_ms(lambda: module(example), repeats, warmup)
    return out


class _AddConstant(nn.Module):
    """The cheapest graph with one node: per-call overhead of a backend at a given input size."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + 1.0


def measure_network_latency(
    model_or_config, backend: str = "onnxruntime", repeats: int = 50, warmup: int = 10, threads: int = 1,
    rounds: int = 1,
) -> float:
    """Median latency (ms, batch 1) of the whole derived network (a ``DCANASForImageClassification`` or
    its config: an untrained one is built); with ``rounds`` > 1 the smallest of that many medians (other
    load on the machine only ever adds time)."""
    from .modeling_dcanas import DCANASForImageClassification

    model = model_or_config
    if isinstance(model_or_config, DCANASConfig):
        model = DCANASForImageClassification(model_or_config)
    config = model.config
    wrapped = _LogitsOnly(model).eval()
    example = torch.randn(1, config.num_channels, config.image_size, config.image_size)
    return min(measure_module(wrapped, example, (backend,), repeats, warmup, threads)[backend]
               for _ in range(max(1, rounds)))


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


# --------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------


@dataclass
class LatencyTable:
    """Measured per-op latencies of the final network's slots (see the module docstring)."""

    network: dict
    entries: dict[str, dict[str, float]] = field(default_factory=dict)   # slot key -> {backend: ms, overhead removed}
    skeleton: dict[str, float] = field(default_factory=dict)             # backend -> ms of the all-`none` network
    overhead: dict[str, dict[str, float]] = field(default_factory=dict)  # "C|H" -> {backend: ms}
    raw: dict[str, dict[str, float]] = field(default_factory=dict)       # slot key -> {backend: ms as measured}
    fingerprint: dict = field(default_factory=device_fingerprint)
    meta: dict = field(default_factory=dict)

    # -- lookups ---------------------------------------------------------------------------------------
    def op_ms(self, op: str, C: int, stride: int, H: int, backend: str = "onnxruntime") -> float:
        if op == "none":
            return 0.0
        key = slot_key(op, C, stride, H)
        try:
            return float(self.entries[key][backend])
        except KeyError:
            raise KeyError(
                f"The latency table has no {backend} entry for {key}; it was measured for the network "
                f"{self.network} with backends {self.meta.get('backends')}. Measure one for this network with "
                "`hf-compress nas lut`."
            ) from None

    def skeleton_ms(self, backend: str = "onnxruntime") -> float:
        if backend not in self.skeleton:
            raise KeyError(f"The latency table has no {backend} measurements (has {sorted(self.skeleton)}).")
        return float(self.skeleton[backend])

    def check_network(self, config: DCANASConfig) -> None:
        sig = network_signature(config)
        if sig != self.network:
            raise ValueError(
                f"The latency table was measured for the network {self.network}, not {sig}; "
                "measure one for this network with `hf-compress nas lut`."
            )

    # -- io --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": TABLE_FORMAT, "fingerprint": self.fingerprint, "network": self.network, "meta": self.meta,
                "skeleton_ms": self.skeleton, "overhead_ms": self.overhead, "entries_ms": self.entries,
                "raw_ms": self.raw}

    def save(self, path: str | os.PathLike) -> str:
        return save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, check_device: bool = True) -> LatencyTable:
        """Read a table; warn (``LatencyTableDeviceWarning``, both fingerprints shown) when it was measured
        on another device or software stack."""
        data = load_json(path, "Latency table", "measure one with `hf-compress nas lut`", TABLE_FORMAT)
        table = cls(
            network=data["network"], entries=data.get("entries_ms", {}), skeleton=data.get("skeleton_ms", {}),
            overhead=data.get("overhead_ms", {}), raw=data.get("raw_ms", {}), fingerprint=data.get("fingerprint", {}),
            meta=data.get("meta", {}),
        )
        if check_device:
            current = device_fingerprint(table.fingerprint.get("threads", 1))
            differ = fingerprint_mismatch(table.fingerprint, current)
            if differ:
                def show(fp):
                    return ", ".join(f"{k}={fp.get(k)!r}" for k in FINGERPRINT_KEYS)

                warnings.warn(
                    f"The latency table {path} was measured on another device or software stack (differs in "
                    f"{', '.join(differ)}): latencies will not match this machine.\n"
                    f"  table:   {show(table.fingerprint)}\n  this:    {show(current)}\n"
                    "Measure a table here with `hf-compress nas lut` for a faithful latency budget.",
                    LatencyTableDeviceWarning,
                    stacklevel=2,
                )
        return table


def _slots(config: DCANASConfig) -> list[tuple[str, int, int, int]]:
    from .constraint import op_slots

    space = config.space
    seen = []
    for kind_slots in op_slots(config).values():
        for edge_slots in kind_slots:
            for C, stride, H, _ in edge_slots:
                for op in space.ops:
                    if op != "none" and (op, C, stride, H) not in seen:
                        seen.append((op, C, stride, H))
    return seen


def measure_latency_table(
    config: DCANASConfig | None = None,
    backends=BACKENDS,
    repeats: int = 50,
    warmup: int = 10,
    threads: int = 1,
    search_space: str = "nb201",
    progress: bool = False,
    **config_overrides,
) -> LatencyTable:
    """Measure every op slot of ``config``'s network (default: the space's evaluation network) on this device."""
    from .constraint import _all_none, final_network_config

    if config is None:
        config = final_network_config(search_space, **config_overrides)
    backends = tuple(backends)
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"Unknown latency backends {sorted(unknown)}; choose from {BACKENDS}.")
    started = time.perf_counter()
    table = LatencyTable(network=network_signature(config), fingerprint=device_fingerprint(threads))
    torch.manual_seed(0)
    for op, C, stride, H in _slots(config):
        over_key = f"{C}|{H}"
        example = torch.randn(1, C, H, H)
        if over_key not in table.overhead:
            call = measure_module(nn.Identity(), example, backends, repeats, warmup, threads)
            add = measure_module(_AddConstant(), example, backends, repeats, warmup, threads)
            table.overhead[over_key] = {
                **{b: call[b] for b in backends}, **{f"{b}_add": max(0.0, add[b] - call[b]) for b in backends}
            }
        module = build_op(config.search_space, op, C, C, stride)
        measured = measure_module(module, example, backends, repeats, warmup, threads)
        key = slot_key(op, C, stride, H)
        table.raw[key] = measured
        over = table.overhead[over_key]
        table.entries[key] = {b: max(0.0, measured[b] - over[b]) + over[f"{b}_add"] for b in backends}
        if progress:
            print(f"  {key:32s} " + "  ".join(f"{b} {measured[b]:.4f} ms" for b in backends), flush=True)
    skeleton_config = config_with_genotype(config, _all_none(config.search_space))
    from .modeling_dcanas import DCANASForImageClassification

    skeleton = _LogitsOnly(DCANASForImageClassification(skeleton_config)).eval()
    example = torch.randn(1, config.num_channels, config.image_size, config.image_size)
    table.skeleton = measure_module(skeleton, example, backends, repeats, warmup, threads)
    table.meta = {"backends": list(backends), "repeats": repeats, "warmup": warmup, "batch_size": 1,
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": time.perf_counter() - started,
                  "space_ops": list(get_space(config.search_space).ops)}
    return table


def estimate_latency(table: LatencyTable, config: DCANASConfig, backend: str = "onnxruntime") -> float:
    """Skeleton + sum of the genotype's ops (ms)."""
    from .constraint import CostModel

    return CostModel(config, "latency", table, backend).derived(config.parsed_genotype)


def latency_estimate_error(
    table: LatencyTable, genotypes, base_config: DCANASConfig, backend: str = "onnxruntime", repeats: int = 50,
    warmup: int = 10, rounds: int = 1,
) -> list[dict]:
    """Estimated vs measured whole-network latency for each genotype (relative error = est / meas - 1)."""
    from .constraint import CostModel

    threads = int(table.fingerprint.get("threads", 1))
    model = CostModel(base_config, "latency", table, backend)
    rows = []
    for genotype in genotypes:
        config = config_with_genotype(base_config, genotype)
        estimated = model.derived(config.parsed_genotype)
        measured = measure_network_latency(config, backend, repeats, warmup, threads, rounds)
        rows.append({"genotype": config.genotype, "estimated_ms": estimated, "measured_ms": measured,
                     "relative_error": estimated / measured - 1.0})
    return rows


def calibrate_latency_table(
    table: LatencyTable, base_config: DCANASConfig, genotypes, backend: str = "onnxruntime", repeats: int = 50,
    warmup: int = 10, rounds: int = 3,
) -> dict:
    """Fit ``measured ~ a * estimated + b`` over whole networks built from ``genotypes`` and fold it into the
    table (``skeleton <- a * skeleton + b``, every op ``<- a * op``): the estimate stays additive (skeleton +
    sum of ops) and the expected-cost model stays exact for one-hot alpha. Corrects what isolated ops miss
    (fusion across ops, memory traffic between them).

    Robust to a busy machine: each network is measured in ``rounds`` rounds (smallest median kept) and the
    line is a Theil-Sen fit (median of pairwise slopes, median intercept), so one disturbed measurement
    does not tilt it. Returns the fit and its rows."""
    rows = latency_estimate_error(table, genotypes, base_config, backend, repeats, warmup, rounds)
    x = np.array([r["estimated_ms"] for r in rows])
    y = np.array([r["measured_ms"] for r in rows])
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))
              if abs(x[j] - x[i]) > 1e-9]
    a = float(np.median(slopes)) if slopes else float(np.median(y / np.maximum(x, 1e-12)))
    if a <= 0:  # degenerate (noise): a pure scale
        a = float(np.median(y / np.maximum(x, 1e-12)))
    b = float(np.median(y - a * x)) if slopes else 0.0
    table.skeleton[backend] = max(0.0, a * table.skeleton[backend] + b)
    for entry in table.entries.values():
        if backend in entry:
            entry[backend] = a * entry[backend]
    fit = {"backend": backend, "scale": a, "offset_ms": b, "rows": rows}
    table.meta.setdefault("calibration", {})[backend] = fit
    return fit


def mean_abs_error(rows: list[dict]) -> float:
    return float(np.mean([abs(r["relative_error"]) for r in rows])) if rows else float("nan")
