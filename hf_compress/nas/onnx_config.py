"""The ONNX export declaration of DCA-NAS networks (model type ``"dcanas"``), for optimum and for ``torch.onnx``.

``DCANASOnnxConfig`` says what the exported graph looks like: one input ``pixel_values`` of shape
``[batch_size, num_channels, image_size, image_size]`` (channels and size fixed by the config, the batch axis
dynamic), one output ``logits`` ``[batch_size, num_labels]``, the default opset and the tolerance used to
validate the export against PyTorch.

* With optimum's ONNX exporter importable (the ``optimum-onnx`` package; it needs transformers < 4.58), the
  class subclasses optimum's ``VisionOnnxConfig`` and :func:`register_dcanas_with_optimum` (run on import)
  registers it with optimum's ``TasksManager`` for ``("dcanas", "image-classification")``, library
  ``"transformers"``, so ``main_export(folder, out, task="image-classification")`` works. For
  ``optimum-cli export onnx`` (a separate process) run :func:`install_optimum_cli_plugin` once (or
  ``python -m hf_compress.nas.onnx_config --install-optimum-cli-plugin``): it drops a register file into
  optimum's ``optimum.commands.register`` namespace, which ``optimum-cli`` imports at start-up.
* Without it (transformers 5, where optimum-onnx cannot be installed), the same declaration is a plain class
  with the same fields, used by :mod:`hf_compress.nas.export` to drive ``torch.onnx.export(dynamo=True)``
  (:meth:`torch_dynamic_shapes` turns the named axes into ``torch.export.Dim`` s).

optimum infers the library of a model *instance* from its class's module name (``transformers...``,
``timm...``), which fails for ``hf_compress.nas.modeling_dcanas``; the registration also teaches
``TasksManager.infer_library_from_model`` that DCA-NAS models are transformers models (nothing else changes).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)

DCANAS_MODEL_TYPE = "dcanas"
DCANAS_ONNX_TASK = "image-classification"
BATCH_AXIS = "batch_size"
OPTIMUM_CLI_PLUGIN_NAME = "register_hf_compress_dcanas.py"


@functools.lru_cache(maxsize=1)
def is_optimum_onnx_available() -> bool:
    """Whether optimum's ONNX exporter (``optimum.exporters.onnx``, package ``optimum-onnx``) imports here."""
    try:
        import optimum.exporters.onnx  # noqa: F401
        from optimum.exporters.onnx.config import VisionOnnxConfig  # noqa: F401
        from optimum.exporters.tasks import TasksManager  # noqa: F401
    except Exception:  # not installed (optimum >= 2.2 moved it out), or installed against another transformers
        return False
    return True


class _DCANASOnnxSpec:
    """The fields both variants share (the single declaration the two export paths read)."""

    MODEL_TYPE = DCANAS_MODEL_TYPE
    SUPPORTED_TASKS = (DCANAS_ONNX_TASK,)
    DEFAULT_ONNX_OPSET = 18  # the lowest opset torch.onnx's dynamo exporter emits natively; optimum's default too
    ATOL_FOR_VALIDATION = 1e-4
    RTOL_FOR_VALIDATION = 1e-4  # hf-compress's own check: |onnx - torch| <= atol + rtol * |torch| (optimum: atol only)

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        """Input name -> {axis: symbolic name}; only the batch axis is dynamic (C, H, W come from the config)."""
        return OrderedDict({"pixel_values": {0: BATCH_AXIS}})

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict({"logits": {0: BATCH_AXIS}})

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """Shape of ``pixel_values`` for ``batch_size`` images."""
        config = self._config
        return (int(batch_size), int(config.num_channels), int(config.image_size), int(config.image_size))

    def torch_dynamic_shapes(self, min_batch: int = 1, max_batch: int | None = None) -> dict[str, dict[int, Any]]:
        """``dynamic_shapes`` for ``torch.onnx.export(..., dynamo=True)`` / ``torch.export``, from :attr:`inputs`:
        each named axis becomes one ``torch.export.Dim`` (the same object wherever the name repeats)."""
        import torch

        dims: dict[str, Any] = {}
        shapes: dict[str, dict[int, Any]] = {}
        for input_name, axes in self.inputs.items():
            shapes[input_name] = {}
            for axis, axis_name in axes.items():
                if axis_name not in dims:
                    dims[axis_name] = torch.export.Dim(axis_name, min=min_batch, max=max_batch)
                shapes[input_name][axis] = dims[axis_name]
        return shapes

    def dummy_pixel_values(self, batch_size: int = 2, seed: int | None = 0):
        """Random ``pixel_values`` (normalised-image range, roughly N(0, 1)) of the declared shape."""
        import torch

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape(batch_size), generator=generator)


def _check_task(task: str) -> None:
    if task not in _DCANASOnnxSpec.SUPPORTED_TASKS:
        raise ValueError(
            f"DCA-NAS models export to ONNX for the task {DCANAS_ONNX_TASK!r} only (asked for {task!r})."
        )


if is_optimum_onnx_available():
    from optimum.exporters.onnx.config import VisionOnnxConfig
    from optimum.utils import DummyVisionInputGenerator, NormalizedVisionConfig

    class DCANASOnnxConfig(_DCANASOnnxSpec, VisionOnnxConfig):
        """optimum ``OnnxConfig`` of DCA-NAS networks (``image-classification``: ``pixel_values`` -> ``logits``)."""

        NORMALIZED_CONFIG_CLASS = NormalizedVisionConfig
        DUMMY_INPUT_GENERATOR_CLASSES = (DummyVisionInputGenerator,)

        def __init__(self, config, task: str = DCANAS_ONNX_TASK, preprocessors: list[Any] | None = None,
                     int_dtype: str = "int64", float_dtype: str = "fp32", **kwargs) -> None:
            _check_task(task)
            super().__init__(config, task=task, preprocessors=preprocessors, int_dtype=int_dtype,
                             float_dtype=float_dtype, **kwargs)

    OPTIMUM_BACKED = True
else:

    class DCANASOnnxConfig(_DCANASOnnxSpec):
        """ONNX declaration of DCA-NAS networks (``image-classification``: ``pixel_values`` -> ``logits``).

        The same fields as optimum's ``OnnxConfig`` (``task``, ``inputs``, ``outputs``, ``DEFAULT_ONNX_OPSET``,
        ``ATOL_FOR_VALIDATION``, ``generate_dummy_inputs``), without optimum (not installable on transformers 5).
        """

        NORMALIZED_CONFIG_CLASS = None
        DUMMY_INPUT_GENERATOR_CLASSES = ()

        def __init__(self, config, task: str = DCANAS_ONNX_TASK, preprocessors: list[Any] | None = None,
                     int_dtype: str = "int64", float_dtype: str = "fp32", **kwargs) -> None:
            _check_task(task)
            if float_dtype != "fp32":
                raise ValueError(f"DCA-NAS ONNX export supports float_dtype='fp32' only (got {float_dtype!r}).")
            self.task = task
            self._config = config
            self._preprocessors = preprocessors
            self.int_dtype = int_dtype
            self.float_dtype = float_dtype

        def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, **kwargs) -> dict[str, Any]:
            if framework not in ("pt", "np"):
                raise ValueError(f"framework must be 'pt' or 'np', got {framework!r}.")
            pixel_values = self.dummy_pixel_values(batch_size, seed=None)
            return {"pixel_values": pixel_values if framework == "pt" else pixel_values.numpy()}

    OPTIMUM_BACKED = False


def _is_dcanas_model(model) -> bool:
    from .modeling_dcanas import DCANASPreTrainedModel

    if isinstance(model, type):
        return issubclass(model, DCANASPreTrainedModel) or getattr(
            getattr(model, "config_class", None), "model_type", None
        ) == DCANAS_MODEL_TYPE
    config = getattr(model, "config", None)
    return isinstance(model, DCANASPreTrainedModel) or getattr(config, "model_type", None) == DCANAS_MODEL_TYPE


def _patch_library_inference(tasks_manager) -> None:
    """optimum reads the library off ``type(model).__module__``; DCA-NAS classes live in ``hf_compress`` (or in
    ``transformers_modules`` when loaded as remote code). Answer ``"transformers"`` for them, defer otherwise."""
    original = tasks_manager.__dict__["_infer_library_from_model_or_model_class"]
    if getattr(original, "_hf_compress_dcanas", False):
        return
    original_func = original.__func__

    def _infer_library_from_model_or_model_class(cls, model=None, model_class=None):
        target = model if model is not None else model_class
        if target is not None and (model is None or model_class is None) and _is_dcanas_model(target):
            return "transformers"
        return original_func(cls, model=model, model_class=model_class)

    patched = classmethod(_infer_library_from_model_or_model_class)
    _infer_library_from_model_or_model_class._hf_compress_dcanas = True
    patched._hf_compress_dcanas = True
    tasks_manager._infer_library_from_model_or_model_class = patched


def register_dcanas_with_optimum() -> bool:
    """Register :class:`DCANASOnnxConfig` with optimum's ``TasksManager`` (exporter ``onnx``, model type
    ``dcanas``, task ``image-classification``, library ``transformers``) and make optimum's library inference
    accept DCA-NAS model instances. Returns False (doing nothing) when optimum's ONNX exporter is not importable."""
    if not OPTIMUM_BACKED:
        return False
    from optimum.exporters.tasks import TasksManager

    from . import configuration_dcanas  # noqa: F401  (AutoConfig registration happens in hf_compress.nas)

    register = TasksManager.create_register("onnx", overwrite_existing=True)
    register(DCANAS_MODEL_TYPE, DCANAS_ONNX_TASK, library_name="transformers")(DCANASOnnxConfig)
    _patch_library_inference(TasksManager)
    return True


_PLUGIN_SOURCE = '''"""Written by hf_compress.nas.onnx_config.install_optimum_cli_plugin(): optimum-cli imports every
module of the optimum.commands.register namespace at start-up; this one registers the DCA-NAS (model type
"dcanas") ONNX config with optimum's TasksManager, so `optimum-cli export onnx --model DIR --task
image-classification OUT` works."""

try:
    import hf_compress.nas  # noqa: F401  (AutoConfig / AutoModelForImageClassification registration)
    from hf_compress.nas.onnx_config import register_dcanas_with_optimum

    register_dcanas_with_optimum()
except ImportError:  # hf-compress uninstalled: leave optimum-cli alone
    pass

REGISTER_COMMANDS = []
'''


def optimum_cli_register_dirs() -> list[str]:
    """The folders of optimum's ``optimum.commands.register`` namespace (where ``optimum-cli`` looks)."""
    import importlib.util

    spec = importlib.util.find_spec("optimum.commands.register")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [str(p) for p in spec.submodule_search_locations if os.path.isdir(p)]


def install_optimum_cli_plugin(register_dir: str | os.PathLike | None = None) -> str:
    """Write the register file that makes ``optimum-cli export onnx`` know DCA-NAS models; returns its path.

    ``register_dir`` defaults to the installed ``optimum/commands/register`` folder (optimum-onnx's). Idempotent.
    """
    if register_dir is None:
        if not is_optimum_onnx_available():
            raise RuntimeError(
                "optimum's ONNX exporter is not importable here (pip install optimum-onnx; it needs "
                "transformers<4.58). On transformers 5 use `hf-compress export` instead."
            )
        dirs = optimum_cli_register_dirs()
        if not dirs:
            raise RuntimeError("No optimum.commands.register folder found: is optimum-onnx installed?")
        register_dir = dirs[0]
    os.makedirs(register_dir, exist_ok=True)
    path = os.path.join(os.fspath(register_dir), OPTIMUM_CLI_PLUGIN_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_PLUGIN_SOURCE)
    return path


if OPTIMUM_BACKED:
    register_dcanas_with_optimum()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hf_compress.nas.onnx_config")
    parser.add_argument("--install-optimum-cli-plugin", action="store_true",
                        help="make `optimum-cli export onnx` know DCA-NAS models (needs optimum-onnx)")
    parser.add_argument("--register-dir", default=None, help="folder to write the plugin into (default: optimum's)")
    cli_args = parser.parse_args()
    if cli_args.install_optimum_cli_plugin:
        print(install_optimum_cli_plugin(cli_args.register_dir))
    else:
        print(f"optimum ONNX exporter available: {OPTIMUM_BACKED}")
