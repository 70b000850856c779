"""ONNX export of DCA-NAS networks through optimum (``main_export``, ``optimum-cli export onnx``) with our OnnxConfig.

optimum's ONNX exporter (package optimum-onnx) needs transformers < 4.58, so this runs in the second environment
built by ``tests/optimum_env/run.sh`` (transformers 4.57 + optimum-onnx); in the main environment it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_compress.nas.onnx_config import is_optimum_onnx_available

pytestmark = pytest.mark.skipif(
    not is_optimum_onnx_available(),
    reason="optimum's ONNX exporter (optimum-onnx, transformers<4.58) is not importable: run tests/optimum_env/run.sh",
)

import hf_compress.nas  # noqa: E402,F401  (registers the Auto classes)
from hf_compress.nas import DCANASConfig, DCANASForImageClassification  # noqa: E402
from nas_tiny import TINY, save_tiny  # noqa: E402

PARITY = 1e-4


def assert_onnx_matches(onnx_path, model_dir) -> float:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["pixel_values"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch_size"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    model = DCANASForImageClassification.from_pretrained(model_dir).eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            expected = model(pixel_values=torch.from_numpy(x)).logits.numpy()
        got = session.run(["logits"], {"pixel_values": x})[0]
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst < PARITY
    return worst


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcanas-optimum")
    for space in TINY:
        save_tiny(space, root / space)
    return root


def test_registered_with_tasks_manager():
    from optimum.exporters.onnx.config import VisionOnnxConfig
    from optimum.exporters.tasks import TasksManager

    from hf_compress.nas.onnx_config import DCANASOnnxConfig

    assert issubclass(DCANASOnnxConfig, VisionOnnxConfig)
    tasks = TasksManager.get_supported_tasks_for_model_type("dcanas", "onnx", library_name="transformers")
    assert list(tasks) == ["image-classification"]
    onnx_config = tasks["image-classification"](DCANASConfig(**TINY["nb201"]))
    assert dict(onnx_config.inputs) == {"pixel_values": {0: "batch_size"}}
    assert dict(onnx_config.outputs) == {"logits": {0: "batch_size"}}
    dummy = onnx_config.generate_dummy_inputs(framework="pt", batch_size=2)
    assert tuple(dummy["pixel_values"].shape) == (2, 3, 32, 32)
    # optimum reads the library off the class's module: hf_compress... is answered as transformers
    model = DCANASForImageClassification(DCANASConfig(**TINY["nb201"]))
    assert TasksManager.infer_library_from_model(model) == "transformers"


@pytest.mark.parametrize("space", sorted(TINY))
def test_main_export(saved, tmp_path, space):
    from optimum.exporters.onnx import main_export

    # optimum's own validation (do_validation, ATOL_FOR_VALIDATION of our config) runs too
    main_export(str(saved / space), tmp_path, task="image-classification", do_validation=True)
    assert {"model.onnx", "config.json", "preprocessor_config.json"} <= set(os.listdir(tmp_path))
    assert_onnx_matches(tmp_path / "model.onnx", saved / space)


def test_optimum_cli_export_onnx(saved, tmp_path):
    from hf_compress.nas.onnx_config import install_optimum_cli_plugin

    # the plugin goes into an optimum.commands.register portion of our own (optimum is a namespace package), so the
    # test leaves the installed optimum alone
    plugin_root = tmp_path / "plugin"
    plugin = install_optimum_cli_plugin(plugin_root / "optimum" / "commands" / "register")
    assert os.path.isfile(plugin)
    cli = os.path.join(os.path.dirname(sys.executable), "optimum-cli")
    cli = cli if os.path.isfile(cli) else shutil.which("optimum-cli")
    assert cli, "optimum-cli not found"
    python_path = [str(plugin_root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    out = tmp_path / "out"
    result = subprocess.run(
        [cli, "export", "onnx", "--model", str(saved / "darts"), "--task", "image-classification", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert assert_onnx_matches(out / "model.onnx", saved / "darts") < PARITY


def test_export_onnx_optimum_backend_report(saved, tmp_path):
    from hf_compress.nas.export import export_onnx, main

    report = export_onnx(saved / "nb201", tmp_path / "a", backend="optimum", latency_repeats=5, latency_warmup=1)
    assert report.backend == "optimum main_export" and report.max_abs_diff < PARITY and len(report.parity) == 4
    assert report.onnxruntime_latency_ms > 0 and "optimum-onnx" in report.versions
    assert report.versions["transformers"].startswith("4.")
    # "auto" picks optimum here; an in-memory model goes through onnx_export_from_model (library inference)
    model = DCANASForImageClassification.from_pretrained(saved / "darts")
    report = export_onnx(model, tmp_path / "b", latency_repeats=0)
    assert report.backend == "optimum onnx_export_from_model" and report.max_abs_diff < PARITY
    assert main([str(saved / "nb201"), "--output", str(tmp_path / "c"), "--latency-repeats", "2"]) == 0
    assert json.loads((tmp_path / "c" / "export_report.json").read_text())["backend"] == "optimum main_export"


def test_torch_backend_same_graph_interface(saved, tmp_path):
    """The torch.onnx path (the one transformers 5 uses) gives the same inputs/outputs/axes as optimum's."""
    pytest.importorskip("onnxscript")
    from hf_compress.nas.export import export_onnx

    a = export_onnx(saved / "nb201", tmp_path / "torch", backend="torch", latency_repeats=0)
    b = export_onnx(saved / "nb201", tmp_path / "optimum", backend="optimum", latency_repeats=0)
    assert (a.input_names, a.output_names, a.onnx_input_shapes) == (b.input_names, b.output_names, b.onnx_input_shapes)
