"""The ``hf-compress`` command line: help, flag parsing with defaults, JSON / YAML config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from hf_compress.cli import COMMANDS, main, parse_vtrans_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_help_returns_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: hf-compress" in out
    for command in COMMANDS:
        assert command in out


def test_main_without_arguments_prints_usage(capsys):
    assert main([]) == 0
    assert "vtrans" in capsys.readouterr().out


def test_main_unknown_command_returns_two(capsys):
    assert main(["no-such-command"]) == 2
    assert "usage: hf-compress" in capsys.readouterr().out


def test_flags_without_budget_default_to_half_sparsity(tmp_path):
    script, args = parse_vtrans_args(["--output_dir", str(tmp_path / "out")])
    assert args.target_sparsity == 0.5
    assert args.target_params is None and args.target_flops is None
    assert args.output_dir == str(tmp_path / "out")
    # the other CLI defaults are applied too
    assert args.variant == "faster"
    assert args.per_device_train_batch_size == 32
    assert args.seed == 0
    assert script.dataset == "sst2"


def test_defaults_do_not_override_given_flags(tmp_path):
    script, args = parse_vtrans_args(
        ["--output_dir", str(tmp_path), "--variant=fast", "--seed", "7", "--target_sparsity", "0.3", "--max_length", "32"]
    )
    assert args.variant == "fast" and args.seed == 7
    assert args.target_sparsity == pytest.approx(0.3)
    assert script.max_length == 32


def test_target_params_alone_injects_no_sparsity(tmp_path):
    _, args = parse_vtrans_args(["--target_params", "20000", "--output_dir", str(tmp_path)])
    assert args.target_params == 20000
    assert args.target_sparsity is None and args.target_flops is None


def test_target_flops_with_equals_sign_injects_no_sparsity(tmp_path):
    _, args = parse_vtrans_args([f"--output_dir={tmp_path}", "--target_flops=1e6"])
    assert args.target_flops == pytest.approx(1e6)
    assert args.target_sparsity is None and args.target_params is None


def test_gate_groups_flag_takes_several_names_and_defaults_to_the_architecture(tmp_path):
    _, args = parse_vtrans_args(["--output_dir", str(tmp_path), "--gate_groups", "heads", "ffn", "mha"])
    assert args.gate_groups == ["heads", "ffn", "mha"]
    _, args = parse_vtrans_args(["--output_dir", str(tmp_path)])
    assert args.gate_groups is None  # the trainer then takes the adapter's default_gate_groups


def test_two_budgets_on_the_command_line_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exactly one budget"):
        parse_vtrans_args(["--output_dir", str(tmp_path), "--target_sparsity", "0.5", "--target_params", "100"])


def test_json_config_file(tmp_path):
    config = {
        "output_dir": str(tmp_path / "json-out"),
        "target_params": 123456,
        "variant": "fast",
        "round_to": 8,
        "dataset": "train.csv",
        "text_column": "text",
        "report_to": "none",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    script, args = parse_vtrans_args([str(path)])
    assert args.output_dir == config["output_dir"]
    assert args.target_params == 123456 and args.target_sparsity is None and args.target_flops is None
    assert args.variant == "fast" and args.round_to == 8
    assert script.dataset == "train.csv" and script.text_column == "text"


def test_yaml_config_file(tmp_path):
    config = {
        "output_dir": str(tmp_path / "yaml-out"),
        "target_sparsity": 0.7,
        "gate_groups": ["heads", "ffn"],
        "max_length": 48,
        "report_to": "none",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    script, args = parse_vtrans_args([str(path)])
    assert args.output_dir == config["output_dir"]
    assert args.target_sparsity == pytest.approx(0.7)
    assert args.target_params is None and args.target_flops is None
    assert args.gate_groups == ["heads", "ffn"]
    assert script.max_length == 48


def test_yml_extension_is_yaml_too(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(f"output_dir: {tmp_path / 'o'}\ntarget_flops: 5.0e+6\nreport_to: none\n")
    _, args = parse_vtrans_args([str(path)])
    assert args.target_flops == pytest.approx(5e6) and args.target_sparsity is None


def test_config_file_without_budget_is_refused(tmp_path):
    """Config files get no injected defaults: they must state their budget themselves."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "o"), "report_to": "none"}))
    with pytest.raises(ValueError, match="exactly one budget"):
        parse_vtrans_args([str(path)])


@pytest.mark.parametrize("name", ["missing.json", "missing.yaml"])
def test_missing_config_file_raises_file_not_found(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(FileNotFoundError, match="missing"):
        parse_vtrans_args([str(path)])


def test_module_vtrans_help_subprocess():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "vtrans", "--help"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--target_sparsity" in result.stdout
    assert "--target_params" in result.stdout and "--target_flops" in result.stdout
    assert "hf-compress vtrans" in result.stdout


_PROCESS_GROUP_SCRIPT = """
import socket, sys
import torch.distributed as dist
import hf_compress.cli as cli

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
def dispatch(command, argv):
    if sys.argv[1] == "fail":
        raise ValueError("bad input")
    return 0
cli._dispatch = dispatch
code = cli.main(["vtrans"])
print(code, dist.is_initialized())
"""


@pytest.mark.parametrize("outcome, code", [("ok", "0"), ("fail", "2")])
def test_main_leaves_the_process_group_on_success_and_on_error(outcome, code):
    """Under ``accelerate launch`` the CLI destroys the gloo group before exit, so no worker tears it down mid-run."""
    done = subprocess.run([sys.executable, "-c", _PROCESS_GROUP_SCRIPT, outcome], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == [code, "False"]
