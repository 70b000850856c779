"""ONNX export of DCA-NAS networks on the transformers 5 stack (torch.onnx dynamo exporter), checked with onnxruntime.

The optimum-onnx path (transformers 4.57) is tested by tests/test_nas_export_optimum.py in the second
environment (tests/optimum_env/run.sh).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import hf_compress.nas  # noqa: F401  (registers the Auto classes)
from hf_compress.nas import DCANASConfig, DCANASForImageClassification
from hf_compress.nas.export import ExportReport, ExportValidationError, export_onnx, main
from hf_compress.nas.onnx_config import DCANASOnnxConfig, is_optimum_onnx_available
from nas_tiny import TINY, save_tiny

PARITY = 1e-4


@pytest.fixture(scope="module", params=sorted(TINY))
def exported(request, tmp_path_factory):
    space = request.param
    root = tmp_path_factory.mktemp(f"export-{space}")
    model_dir, out_dir = root / "model", root / "onnx"
    save_tiny(space, model_dir)
    report = export_onnx(model_dir, out_dir, backend="torch", latency_repeats=5, latency_warmup=1)
    return space, model_dir, out_dir, report


def test_onnx_config_declaration():
    config = DCANASConfig(**TINY["darts"], image_size=16, num_channels=1)
    onnx_config = DCANASOnnxConfig(config)
    assert onnx_config.task == "image-classification"
    assert dict(onnx_config.inputs) == {"pixel_values": {0: "batch_size"}}
    assert dict(onnx_config.outputs) == {"logits": {0: "batch_size"}}
    assert onnx_config.input_shape(3) == (3, 1, 16, 16)
    assert onnx_config.DEFAULT_ONNX_OPSET >= 18 and 0 < onnx_config.ATOL_FOR_VALIDATION <= 1e-4
    dummy = onnx_config.generate_dummy_inputs(framework="pt", batch_size=2)
    assert tuple(dummy["pixel_values"].shape) == (2, 1, 16, 16)
    shapes = onnx_config.torch_dynamic_shapes()
    assert list(shapes) == ["pixel_values"] and list(shapes["pixel_values"]) == [0]
    with pytest.raises(ValueError, match="image-classification"):
        DCANASOnnxConfig(config, task="text-classification")


def test_parity_batch_1_and_3(exported):
    space, model_dir, out_dir, report = exported
    assert report.validated and report.max_abs_diff < PARITY
    checks = {(p.inputs, p.batch_size): p for p in report.parity}
    assert set(checks) == {("random", 1), ("real", 1), ("random", 3), ("real", 3)}
    assert all(p.argmax_agreement == 1.0 and p.within_tolerance for p in report.parity)
    assert checks[("real", 3)].onnx_output_shape == [3, TINY[space]["num_classes"]]
    # independently of the report: reload both and compare on fresh inputs
    model = DCANASForImageClassification.from_pretrained(model_dir).eval()
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            expected = model(pixel_values=torch.from_numpy(x)).logits.numpy()
        got = session.run(["logits"], {"pixel_values": x})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < PARITY


def test_batch_axis_is_dynamic(exported):
    _, _, out_dir, report = exported
    graph = onnx.load(str(out_dir / "model.onnx")).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "pixel_values" and out.name == "logits"
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch_size" and [d.dim_value for d in in_dims[1:]] == [3, 32, 32]
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch_size"
    assert report.export_batch_size == 2  # traced at 2, run below at sizes it never saw
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5, 8):
        logits = session.run(None, {"pixel_values": np.zeros((batch, 3, 32, 32), np.float32)})[0]
        assert logits.shape[0] == batch


def test_report_json_and_saved_files(exported):
    space, _, out_dir, report = exported
    assert {"model.onnx", "config.json", "preprocessor_config.json", "export_report.json"} <= set(os.listdir(out_dir))
    data = json.loads((out_dir / "export_report.json").read_text())
    assert data["backend"] == "torch.onnx (dynamo)" and data["opset"] == 18
    assert data["search_space"] == space and data["input_names"] == ["pixel_values"]
    assert data["onnx_input_shapes"]["pixel_values"] == ["batch_size", 3, 32, 32]
    assert data["dynamic_axes"] == {"pixel_values": {"0": "batch_size"}, "logits": {"0": "batch_size"}}
    assert data["max_abs_diff"] == report.max_abs_diff < PARITY
    assert data["onnxruntime_latency_ms"] > 0 and data["torch_latency_ms"] > 0 and data["latency_batch_size"] == 1
    assert data["real_inputs"]  # cifar10-test via the processor when ../shared/data is there, synthetic else
    assert len(data["parity"]) == 4 and "onnxscript" in data["versions"]
    assert json.loads(report.to_json()) == data
    assert isinstance(report, ExportReport) and "max abs diff" in report.summary()
    from transformers import AutoConfig, AutoImageProcessor

    assert AutoConfig.from_pretrained(out_dir).model_type == "dcanas"
    assert AutoImageProcessor.from_pretrained(out_dir).size == {"height": 32, "width": 32}


def test_cli_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("MODEL_DIR".lower(), "--output", "--opset", "--backend", "--no-validate"):
        assert option in text.lower()


def test_cli_run(tmp_path, capsys):
    save_tiny("nb201", tmp_path / "model", seed=1)
    code = main([str(tmp_path / "model"), "--output", str(tmp_path / "out"), "--opset", "18", "--backend", "torch",
                 "--atol", "1e-4", "--rtol", "0", "--latency-repeats", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "out" / "model.onnx").is_file()
    printed = json.loads(captured.out[: captured.out.rindex("}") + 1])
    assert printed["max_abs_diff"] < PARITY and "onnxruntime" in captured.out
    # usage errors are exit codes, not exceptions
    assert main([str(tmp_path / "model")]) == 2  # --output missing
    assert main([str(tmp_path / "model"), "--output", str(tmp_path / "o2"), "--backend", "tf"]) == 2


def test_errors_bad_input(tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' model, not a DCA-NAS"):
        export_onnx(tmp_path / "bert", tmp_path / "out")
    assert main([str(tmp_path / "bert"), "--output", str(tmp_path / "out")]) == 2
    assert "'bert' model" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not found"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_onnx(tmp_path / "empty", tmp_path / "out")
    DCANASConfig(**TINY["nb201"]).save_pretrained(tmp_path / "no-weights")
    with pytest.raises(FileNotFoundError, match="no weights"):
        export_onnx(tmp_path / "no-weights", tmp_path / "out")
    with pytest.raises(ValueError, match="backend"):
        export_onnx(tmp_path / "no-weights", tmp_path / "out", backend="onnx")
    if not is_optimum_onnx_available():
        save_tiny("nb201", tmp_path / "model")
        with pytest.raises(RuntimeError, match="optimum-onnx"):
            export_onnx(tmp_path / "model", tmp_path / "out", backend="optimum")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_validation_failure_is_a_clear_error(tmp_path):
    model = save_tiny("nb201", tmp_path / "model", seed=2)
    with pytest.raises(ExportValidationError, match=r"max abs diff .* > atol 1e-12") as info:
        export_onnx(model, tmp_path / "out", backend="torch", atol=1e-12, rtol=0.0, latency_repeats=0)
    assert info.value.report.max_abs_diff > 1e-12
    data = json.loads((tmp_path / "out" / "export_report.json").read_text())  # the report is kept for inspection
    assert data["validated"] and data["source"].startswith("<in-memory")
    assert data["rtol"] == 0.0 and not any(check["within_tolerance"] for check in data["parity"])
