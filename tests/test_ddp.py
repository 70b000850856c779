"""VTrans, RAMEN and DCA-NAS under `accelerate launch --multi_gpu --num_processes 2` on CPU (DDP with gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    """A fresh rendezvous port per launch: back-to-back launches on the default port can collide."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(script: str, out: Path, *args: str) -> list[dict]:
    """``accelerate launch`` ``script out *args`` on 2 CPU processes; returns each rank's ``out/rank<r>.json``.

    accelerate's --cpu launcher starts a single process; --multi_gpu on a machine without GPUs starts
    torch.distributed workers that train on CPU with gloo (use_cpu=True in the scripts)."""
    launcher = shutil.which("accelerate")
    command = [launcher, "launch"] if launcher else [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--main_process_port", str(_free_port()), "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(HERE, script), str(out), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.ddp
@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_vtrans_under_accelerate_launch_two_processes(tmp_path, kind):
    ranks = launch_two_processes("ddp_vtrans_script.py", tmp_path, kind)
    assert [r["world_size"] for r in ranks] == [2, 2]
    # DDP keeps gates and multipliers identical on both processes, so both materialize the same model
    assert ranks[0]["mu_sum"] == pytest.approx(ranks[1]["mu_sum"], rel=1e-6)
    assert ranks[0]["lambda_1"] == pytest.approx(ranks[1]["lambda_1"], rel=1e-6)
    assert ranks[0]["heads"] == ranks[1]["heads"]
    assert (tmp_path / "model.safetensors").is_file()  # saved once, by the main process


@pytest.mark.ddp
def test_ramen_under_accelerate_launch_two_processes(tmp_path):
    ranks = launch_two_processes("ddp_ramen_script.py", tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 48 points, batch 8 per process, 2 processes -> 3 steps per epoch, 2 epochs
    assert [r["global_steps"] for r in ranks] == [6, 6]
    # DDP keeps the encoder identical on both processes; both rebuilt their clusters each epoch
    assert ranks[0]["param_sum"] == pytest.approx(ranks[1]["param_sum"], rel=1e-9)
    assert [r["clusters_refreshed"] for r in ranks] == [2, 2]
    assert (tmp_path / "xc" / "predictor.json").is_file() and (tmp_path / "model.safetensors").is_file()


@pytest.mark.ddp
def test_ramen_graph_reweight_under_accelerate_launch_two_processes(tmp_path):
    """Every process re-weights the graph from the same synchronised encoder: identical pruned matrices."""
    ranks = launch_two_processes("ddp_ramen_script.py", tmp_path, "reweight")
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_steps"] for r in ranks] == [6, 6]
    assert [r["graph_refreshes"] for r in ranks] == [2, 2]  # before epoch 0 and at epoch 1
    assert ranks[0]["graph_hash"] == ranks[1]["graph_hash"]
    assert 0 < ranks[0]["graph_edges_kept"] < ranks[0]["graph_edges"]
    assert ranks[0]["kept_logged"] == ranks[1]["kept_logged"] and len(ranks[0]["kept_logged"]) == 2
    assert ranks[0]["param_sum"] == pytest.approx(ranks[1]["param_sum"], rel=1e-9)


@pytest.mark.ddp
def test_dcanas_search_under_accelerate_launch_two_processes(tmp_path):
    """Weights are synchronised by DDP; every process takes the same alpha / lambda step on the same validation
    batch, so alpha, lambda and the derived genotype stay identical and the main process saves once."""
    ranks = launch_two_processes("ddp_dcanas_script.py", tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_steps"] for r in ranks] == [6, 6]
    assert ranks[0]["alpha_moved"] > 1e-2  # alpha was trained (it starts at std 1e-3)
    assert ranks[0]["alpha"] == ranks[1]["alpha"] and ranks[0]["lambda"] == ranks[1]["lambda"]
    assert ranks[0]["classifier_sum"] == pytest.approx(ranks[1]["classifier_sum"], rel=1e-6)
    assert ranks[0]["genotype"] == ranks[1]["genotype"]
    saved = json.loads((tmp_path / "search_results.json").read_text())
    assert saved["genotype"] == ranks[0]["genotype"]
