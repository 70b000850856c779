"""ONNX export of DCA-NAS networks, validated against PyTorch with onnxruntime: ``hf-compress export``.

Two exporters read the same declaration (:class:`~hf_compress.nas.onnx_config.DCANASOnnxConfig`: input
``pixel_values`` ``[batch_size, C, H, W]`` with a dynamic batch axis, output ``logits`` ``[batch_size, labels]``):

* ``backend="torch"``: ``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes`` built from the declared
  axes. Works on our transformers 5 stack (needs ``onnxscript``).
* ``backend="optimum"``: optimum's ``main_export`` (package ``optimum-onnx``, transformers < 4.58 only), with
  the config registered in optimum's ``TasksManager``.
* ``backend="auto"``: optimum when its ONNX exporter imports, else torch.

Either way ``output_dir`` gets ``model.onnx``, ``config.json``, ``preprocessor_config.json`` and
``export_report.json`` (:class:`ExportReport`): onnxruntime vs PyTorch max abs diff on random and real-looking
images (CIFAR-10 test images through the model's image processor when the offline data is there, synthetic
images otherwise) at batch sizes 1 and 3, and the median batch-1 latency of onnxruntime and of PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .jsonio import load_json
from .latency import median_ms
from .onnx_config import DCANAS_MODEL_TYPE, DCANAS_ONNX_TASK, DCANASOnnxConfig, is_optimum_onnx_available

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "optimum")
ONNX_FILE = "model.onnx"
REPORT_FILE = "export_report.json"
VALIDATION_BATCH_SIZES = (1, 3)
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


class ExportValidationError(ValueError):
    """The ONNX model's outputs differ from PyTorch's by more than the tolerance (the report says where)."""

    def __init__(self, message: str, report: ExportReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ParityCheck:
    inputs: str  # "random" or "real"
    batch_size: int
    max_abs_diff: float
    max_abs_logit: float
    within_tolerance: bool  # |onnx - torch| <= atol + rtol * |torch| everywhere (numpy.allclose)
    argmax_agreement: float
    onnx_output_shape: list[int]


@dataclass
class ExportReport:
    """What ``export_onnx`` did and measured; ``to_json`` writes ``export_report.json``."""

    source: str
    output_dir: str
    onnx_path: str
    backend: str
    opset: int
    model_type: str = DCANAS_MODEL_TYPE
    task: str = DCANAS_ONNX_TASK
    search_space: str | None = None
    genotype: str | None = None
    num_labels: int | None = None
    num_parameters: int | None = None
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    onnx_input_shapes: dict[str, list[Any]] = field(default_factory=dict)
    export_batch_size: int = 2
    export_seconds: float | None = None
    onnx_file_mb: float | None = None
    validated: bool = False
    atol: float | None = None
    rtol: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None  # max abs diff / max |logit| of the same check
    parity: list[ParityCheck] = field(default_factory=list)
    real_inputs: str | None = None
    onnxruntime_latency_ms: float | None = None
    torch_latency_ms: float | None = None
    onnxruntime_speedup: float | None = None
    latency_batch_size: int = 1
    latency_repeats: int = 0
    num_threads: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        return text

    def summary(self) -> str:
        lines = [f"exported {self.search_space or ''} DCA-NAS model -> {self.onnx_path} "
                 f"({self.backend}, opset {self.opset})"]
        if self.validated:
            lines.append(f"onnxruntime vs PyTorch: max abs diff {self.max_abs_diff:.3g}, "
                         f"relative {self.max_rel_diff:.3g} "
                         f"(atol {self.atol:g}, rtol {self.rtol:g}, batch "
                         f"sizes {sorted({p.batch_size for p in self.parity})}, random + {self.real_inputs} inputs)")
        if self.onnxruntime_latency_ms is not None:
            lines.append(f"latency, batch {self.latency_batch_size}, median of {self.latency_repeats}: onnxruntime "
                         f"{self.onnxruntime_latency_ms:.3f} ms, PyTorch {self.torch_latency_ms:.3f} ms "
                         f"({self.num_threads} thread(s))")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# loading


def _check_model_folder(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model folder not found: {path}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Expected a saved model folder (save_pretrained output), got a file: {path}")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        present = ", ".join(sorted(os.listdir(path))[:12]) or "nothing"
        raise FileNotFoundError(f"{path} has no config.json (found: {present}); is it a saved model folder?")
    raw = load_json(config_path, "Model config", "save the model with save_pretrained")
    model_type = raw.get("model_type")
    if model_type != DCANAS_MODEL_TYPE:
        raise ValueError(
            f"{path} holds a {model_type!r} model, not a DCA-NAS one (model_type {DCANAS_MODEL_TYPE!r}): "
            "`hf-compress export` exports DCA-NAS networks. For other transformers models use optimum "
            "(optimum-cli export onnx) or torch.onnx.export."
        )
    if not any(os.path.isfile(os.path.join(path, name)) for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{path} has a DCA-NAS config.json but no weights ({' / '.join(_WEIGHT_FILES[::2])}); save the model "
            "with model.save_pretrained(folder)."
        )
    return raw


def _load_model(model_or_path):
    """(model in eval mode, source folder or None, description)."""
    from transformers import PreTrainedModel

    from .modeling_dcanas import DCANASForImageClassification

    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        _check_model_folder(path)
        model = DCANASForImageClassification.from_pretrained(path)
        return model.eval(), path, os.path.abspath(path)
    if isinstance(model_or_path, PreTrainedModel):
        model_type = getattr(model_or_path.config, "model_type", None)
        if model_type != DCANAS_MODEL_TYPE:
            raise ValueError(
                f"export_onnx exports DCA-NAS models; got a {type(model_or_path).__name__} (model_type {model_type!r})."
            )
        if not isinstance(model_or_path, DCANASForImageClassification):
            raise ValueError(
                f"export_onnx exports DCANASForImageClassification (image-classification: pixel_values -> logits); "
                f"got {type(model_or_path).__name__}."
            )
        return model_or_path.eval(), None, f"<in-memory {type(model_or_path).__name__}>"
    raise TypeError(f"model_or_path must be a folder path or a DCANASForImageClassification, got {type(model_or_path)}")


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "onnx", "onnxruntime"]
    names += ["optimum", "optimum-onnx"] if backend == "optimum" else ["onnxscript"]
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# ---------------------------------------------------------------------------------------------------------------
# exporters


class _LogitsOnly:
    """Builds a module that maps ``pixel_values`` to ``logits`` (a plain tensor output for torch.export)."""

    @staticmethod
    def wrap(model):
        import torch

        class DCANASLogits(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values):
                return self.inner(pixel_values=pixel_values).logits

        return DCANASLogits(model).eval()


@contextlib.contextmanager
def _quiet_torch_onnx():
    """torch.onnx's dynamo exporter logs one warning per missing torchvision op; keep the CLI output readable."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.onnx._internal.exporter._registration")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _export_torch(model, onnx_config: DCANASOnnxConfig, onnx_path: str, opset: int, batch_size: int) -> None:
    import torch

    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "torch.onnx.export(dynamo=True) needs onnxscript: pip install onnxscript"
        ) from None
    pixel_values = onnx_config.dummy_pixel_values(batch_size)
    with _quiet_torch_onnx(), torch.no_grad():
        program = torch.onnx.export(
            _LogitsOnly.wrap(model),
            (),
            kwargs={"pixel_values": pixel_values},
            dynamo=True,
            input_names=list(onnx_config.inputs),
            output_names=list(onnx_config.outputs),
            dynamic_shapes=onnx_config.torch_dynamic_shapes(),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
        program.save(onnx_path)


def _export_optimum(model, source: str | None, output_dir: str, opset: int, batch_size: int) -> None:
    if not is_optimum_onnx_available():
        raise RuntimeError(
            "backend='optimum' needs optimum's ONNX exporter (pip install optimum-onnx), which requires "
            "transformers<4.58; on transformers 5 use backend='torch' (the same graph through torch.onnx)."
        )
    from .onnx_config import register_dcanas_with_optimum

    register_dcanas_with_optimum()
    if source is not None:
        from optimum.exporters.onnx import main_export

        main_export(
            source, output_dir, task=DCANAS_ONNX_TASK, opset=opset, do_validation=False,
            library_name="transformers", batch_size=batch_size,
        )
    else:
        from optimum.exporters.onnx import onnx_export_from_model

        onnx_export_from_model(
            model, output_dir, task=DCANAS_ONNX_TASK, opset=opset, do_validation=False, batch_size=batch_size,
        )


# ---------------------------------------------------------------------------------------------------------------
# validation and latency


def _synthetic_images(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs with a little texture: uint8 [count, size, size, channels] (image statistics, not noise)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, 4, 4, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    texture = 0.08 * torch.randn(count, channels, size, size, generator=generator)
    images = (smooth + texture).clamp(0, 1).mul(255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()


def _cifar_images(count: int) -> np.ndarray | None:
    try:
        from ..data import data_dir

        path = data_dir("cifar10") / "cifar10" / "cifar10_test.npz"
        with np.load(path) as archive:
            images = archive["images"]
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return None
    index = np.linspace(0, len(images) - 1, count).astype(int)  # class-major order: spread over the classes
    return np.ascontiguousarray(images[index])


def _processor_mean_std(processor, channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(getattr(processor, "image_mean", None) or [0.5] * channels, dtype=np.float32)
    std = np.asarray(getattr(processor, "image_std", None) or [0.5] * channels, dtype=np.float32)
    return mean, std


def _real_pixel_values(config, output_dir: str, count: int) -> tuple[np.ndarray, str]:
    """``count`` real-looking images preprocessed for the model: (pixel_values float32 [count, C, H, W], origin)."""
    import torch
    import torch.nn.functional as F

    channels, size = int(config.num_channels), int(config.image_size)
    images = _cifar_images(count) if channels in (1, 3) else None
    origin = "cifar10-test" if images is not None else "synthetic"
    if images is None:
        images = _synthetic_images(count, 32, channels)
    elif channels == 1:
        images = images.mean(axis=-1, keepdims=True).round().astype(np.uint8)
    processor = None
    with contextlib.suppress(Exception):
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(output_dir)
    if processor is not None and channels == 3:
        try:
            batch = processor(images=list(images), return_tensors="np")["pixel_values"].astype(np.float32)
            if tuple(batch.shape[1:]) == (channels, size, size):
                return batch, f"{origin} via {type(processor).__name__}"
        except Exception as err:  # an older/newer processor API: preprocess by hand with its statistics
            logger.info("image processor failed on the validation images (%s); preprocessing by hand", err)
    mean, std = _processor_mean_std(processor, channels)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    if tensor.shape[-1] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    batch = (tensor.numpy() - mean[None, :, None, None]) / std[None, :, None, None]
    return batch.astype(np.float32), f"{origin} (resized, normalised by hand)"


def _torch_logits(model, pixel_values: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixel_values)).logits.float().numpy()


def _validate(model, session, onnx_config, output_dir: str, report: ExportReport, seed: int = 0) -> None:
    atol, rtol = report.atol, report.rtol
    rng = np.random.default_rng(seed)
    largest = max(VALIDATION_BATCH_SIZES)
    real, origin = _real_pixel_values(model.config, output_dir, largest)
    report.real_inputs = origin
    input_name = session.get_inputs()[0].name
    for batch_size in VALIDATION_BATCH_SIZES:
        shape = onnx_config.input_shape(batch_size)
        for kind, pixel_values in (
            ("random", rng.standard_normal(shape).astype(np.float32)),
            ("real", np.ascontiguousarray(real[:batch_size])),
        ):
            expected = _torch_logits(model, pixel_values)
            got = session.run(None, {input_name: pixel_values})[0]
            if got.shape != expected.shape:
                raise ExportValidationError(
                    f"ONNX output shape {list(got.shape)} != PyTorch {list(expected.shape)} at batch size "
                    f"{batch_size}: the batch axis is not dynamic?", report,
                )
            diff = np.abs(got - expected)
            report.parity.append(ParityCheck(
                inputs=kind, batch_size=batch_size,
                max_abs_diff=float(diff.max()),
                max_abs_logit=float(np.abs(expected).max()),
                within_tolerance=bool((diff <= atol + rtol * np.abs(expected)).all()),
                argmax_agreement=float((got.argmax(-1) == expected.argmax(-1)).mean()),
                onnx_output_shape=list(got.shape),
            ))
    report.max_abs_diff = max(p.max_abs_diff for p in report.parity)
    report.max_rel_diff = max(p.max_abs_diff / max(p.max_abs_logit, 1e-12) for p in report.parity)
    report.validated = True


def _measure_latency(model, session, onnx_config, report: ExportReport, repeats: int, warmup: int) -> None:
    import torch

    pixel_values = onnx_config.dummy_pixel_values(report.latency_batch_size).numpy()
    input_name = session.get_inputs()[0].name
    tensor = torch.from_numpy(pixel_values)

    def run_torch():
        with torch.inference_mode():
            model(pixel_values=tensor)

    def run_onnxruntime():
        session.run(None, {input_name: pixel_values})

    report.onnxruntime_latency_ms = round(median_ms(run_onnxruntime, repeats, warmup), 4)
    report.torch_latency_ms = round(median_ms(run_torch, repeats, warmup), 4)
    report.latency_repeats = repeats
    if report.onnxruntime_latency_ms > 0:
        report.onnxruntime_speedup = round(report.torch_latency_ms / report.onnxruntime_latency_ms, 3)


# ---------------------------------------------------------------------------------------------------------------
# public API


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "auto":
        return "optimum" if is_optimum_onnx_available() else "torch"
    return backend


def export_onnx(
    model_or_path,
    output_dir: str | os.PathLike,
    opset: int | None = None,
    batch_size: int = 1,
    validate: bool = True,
    backend: str = "auto",
    atol: float | None = None,
    rtol: float | None = None,
    latency_repeats: int = 30,
    latency_warmup: int = 5,
    num_threads: int | None = None,
) -> ExportReport:
    """Export a DCA-NAS image classifier (a saved folder or a ``DCANASForImageClassification``) to
    ``output_dir/model.onnx`` with its config and preprocessor config; validate it against PyTorch with
    onnxruntime (``validate``) and measure batch-1 latency of both. Returns the report (also written to
    ``output_dir/export_report.json``).

    ``opset``: default ``DCANASOnnxConfig.DEFAULT_ONNX_OPSET`` (18). ``batch_size``: batch of the dummy input
    the graph is traced with (the batch axis stays dynamic; torch.export needs at least 2, smaller values are
    raised to 2). ``atol`` / ``rtol``: defaults ``DCANASOnnxConfig.ATOL_FOR_VALIDATION`` (1e-4) /
    ``RTOL_FOR_VALIDATION`` (1e-4); an output outside ``atol + rtol * |torch logit|`` (``numpy.allclose``; the
    relative part covers the float32 rounding of large logits of untrained networks, ~1e-6 relative) raises
    :class:`ExportValidationError` after writing the report; ``rtol=0`` makes it a pure max-abs-diff bound.
    ``num_threads``: threads of the latency runs
    (default: ``torch.get_num_threads()``, the same for onnxruntime and PyTorch). ``latency_repeats=0`` skips
    the latency measurement.
    """
    import torch

    backend = resolve_backend(backend)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    model, source, description = _load_model(model_or_path)
    onnx_config = DCANASOnnxConfig(model.config, task=DCANAS_ONNX_TASK)
    opset = int(opset if opset is not None else onnx_config.DEFAULT_ONNX_OPSET)
    if backend == "torch" and opset < 18:
        raise ValueError(f"torch.onnx's dynamo exporter needs opset >= 18 (got {opset}).")
    atol = float(atol if atol is not None else onnx_config.ATOL_FOR_VALIDATION)
    rtol = float(rtol if rtol is not None else onnx_config.RTOL_FOR_VALIDATION)
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0 (got {atol}, {rtol}).")
    export_batch = max(2, batch_size)
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    onnx_path = os.path.join(output_dir, ONNX_FILE)

    start = time.perf_counter()
    if backend == "torch":
        _export_torch(model, onnx_config, onnx_path, opset, export_batch)
    else:
        _export_optimum(model, source, output_dir, opset, export_batch)
    export_seconds = time.perf_counter() - start
    if not os.path.isfile(onnx_path):
        raise RuntimeError(f"The {backend} exporter finished but wrote no {onnx_path}.")

    # config + preprocessor config beside the graph (optimum writes them itself; keep what it wrote)
    if not os.path.isfile(os.path.join(output_dir, "config.json")):
        model.config.save_pretrained(output_dir)
    if not os.path.isfile(os.path.join(output_dir, "preprocessor_config.json")):
        saved = os.path.join(source, "preprocessor_config.json") if source else None
        if saved and os.path.isfile(saved):
            shutil.copyfile(saved, os.path.join(output_dir, "preprocessor_config.json"))
        else:
            from .image_processing_dcanas import default_image_processor

            default_image_processor(model.config).save_pretrained(output_dir)

    from ..evaluation import ort_session

    threads = int(num_threads or torch.get_num_threads())
    session = ort_session(onnx_path, threads)
    report = ExportReport(
        source=description,
        output_dir=os.path.abspath(output_dir),
        onnx_path=os.path.abspath(onnx_path),
        backend={"torch": "torch.onnx (dynamo)"}.get(
            backend, "optimum main_export" if source else "optimum onnx_export_from_model"),
        opset=opset,
        search_space=model.config.search_space,
        genotype=model.config.genotype,
        num_labels=int(model.config.num_labels),
        num_parameters=int(sum(p.numel() for p in model.parameters())),
        input_names=[i.name for i in session.get_inputs()],
        output_names=[o.name for o in session.get_outputs()],
        dynamic_axes={name: {str(a): n for a, n in axes.items()}
                      for name, axes in {**onnx_config.inputs, **onnx_config.outputs}.items()},
        onnx_input_shapes={i.name: list(i.shape) for i in session.get_inputs()},
        export_batch_size=export_batch,
        export_seconds=round(export_seconds, 3),
        onnx_file_mb=round(os.path.getsize(onnx_path) / 2**20, 4),
        atol=atol,
        rtol=rtol,
        num_threads=threads,
        versions=_versions(backend),
    )
    report_path = os.path.join(output_dir, REPORT_FILE)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if validate:
            _validate(model, session, onnx_config, output_dir, report)
        if latency_repeats > 0:
            _measure_latency(model, session, onnx_config, report, latency_repeats, latency_warmup)
    finally:
        torch.set_num_threads(previous_threads)
        report.files = sorted(set(os.listdir(output_dir)) | {REPORT_FILE})
        report.to_json(report_path)
    failed = [p for p in report.parity if not p.within_tolerance] if validate else []
    if failed:
        worst = max(failed, key=lambda p: p.max_abs_diff)
        raise ExportValidationError(
            f"ONNX export of {description} does not match PyTorch: max abs diff {worst.max_abs_diff:.3g} > atol "
            f"{atol:g} + rtol {rtol:g} * |logit| (logits up to {worst.max_abs_logit:.3g}; {worst.inputs} inputs, batch "
            f"size {worst.batch_size}). The graph is at {onnx_path}; the report at {report_path}.",
            report,
        )
    return report


def build_parser(prog: str = "hf-compress export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a saved DCA-NAS model folder to ONNX (model.onnx + config + preprocessor config), "
        "validate it against PyTorch with onnxruntime and measure its latency (export_report.json).",
    )
    parser.add_argument("model_dir", help="folder written by DCANASForImageClassification.save_pretrained")
    parser.add_argument("--output", "-o", required=True, help="folder to write model.onnx and the report into")
    parser.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset (default {DCANASOnnxConfig.DEFAULT_ONNX_OPSET})")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="torch: torch.onnx dynamo exporter; optimum: optimum main_export (needs optimum-onnx, "
                        "transformers<4.58); auto: optimum when available, else torch")
    parser.add_argument("--no-validate", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="dummy batch the graph is traced with (the batch axis stays dynamic)")
    parser.add_argument("--atol", type=float, default=None,
                        help=f"tolerance of the comparison (default {DCANASOnnxConfig.ATOL_FOR_VALIDATION:g})")
    parser.add_argument("--rtol", type=float, default=None,
                        help=f"relative tolerance (default {DCANASOnnxConfig.RTOL_FOR_VALIDATION:g}; 0: absolute only)")
    parser.add_argument("--latency-repeats", type=int, default=30, help="timed runs per runtime (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="threads for the latency runs (default: torch's)")
    return parser


def main(argv: list[str] | None = None, prog: str = "hf-compress export") -> int:
    """``hf-compress export MODEL_DIR --output DIR [--opset N] [--backend auto|torch|optimum] [--no-validate]``;
    returns the exit code (0 ok, 1 validation failed, 2 bad input)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    try:
        report = export_onnx(
            args.model_dir, args.output, opset=args.opset, batch_size=args.batch_size, validate=not args.no_validate,
            backend=args.backend, atol=args.atol, rtol=args.rtol, latency_repeats=args.latency_repeats,
            num_threads=args.threads,
        )
    except ExportValidationError as err:
        if err.report is not None:
            print(err.report.to_json())
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, RuntimeError, TypeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(report.to_json())
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
