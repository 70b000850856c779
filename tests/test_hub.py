"""Push / pull of pruned models through the local Hub-compatible server, with the real clients."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_client


def test_push_then_pull_with_fresh_cache_is_bit_identical(hub, tmp_path):
    pushed = run_client(hub, tmp_path / "home-push", "push", "tester/tiny-pruned", tmp_path / "pushed.safetensors", 0)
    pulled = run_client(hub, tmp_path / "home-pull", "pull", "tester/tiny-pruned", tmp_path / "pulled.safetensors")
    assert pulled["class"] == "PrunedEncoderForSequenceClassification"
    assert pulled["heads"] == [2, 4]
    a, b = load_file(tmp_path / "pushed.safetensors"), load_file(tmp_path / "pulled.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(pushed["commit"]) == 40


def test_revision_pins_an_older_commit(hub, tmp_path):
    first = run_client(hub, tmp_path / "h1", "push", "tester/versions", tmp_path / "v1.safetensors", 1)
    run_client(hub, tmp_path / "h2", "push", "tester/versions", tmp_path / "v2.safetensors", 2)
    run_client(hub, tmp_path / "h3", "pull", "tester/versions", tmp_path / "old.safetensors", first["commit"])
    run_client(hub, tmp_path / "h4", "pull", "tester/versions", tmp_path / "new.safetensors")
    v1, v2 = load_file(tmp_path / "v1.safetensors"), load_file(tmp_path / "v2.safetensors")
    old, new = load_file(tmp_path / "old.safetensors"), load_file(tmp_path / "new.safetensors")
    key = "model.embeddings.word_embeddings.weight"
    assert torch.equal(old[key], v1[key]) and torch.equal(new[key], v2[key]) and not torch.equal(v1[key], v2[key])


def _request(hub, method, path, body=b"", conn=None):
    conn = conn or http.client.HTTPConnection(hub.url.split("//")[1])
    conn.request(method, path, body=body, headers={"Content-Length": str(len(body))})
    response = conn.getresponse()
    return conn, response, response.read()


def test_error_codes_and_keep_alive(hub):
    conn, response, _ = _request(hub, "POST", "/api/repos/create", json.dumps({"name": "r", "organization": "o"}).encode())
    assert response.status == 200
    _, response, _ = _request(hub, "POST", "/api/repos/create", json.dumps({"name": "r", "organization": "o"}).encode(), conn)
    assert response.status == 409
    # an error answer still consumes the request body: the next request on the connection is intact
    _, response, _ = _request(hub, "POST", "/api/models/o/missing/commit/main", b"x" * 1000, conn)
    assert response.status == 404 and response.getheader("X-Error-Code") == "RepoNotFound"
    _, response, _ = _request(hub, "HEAD", "/o/r/resolve/main/config.json", conn=conn)
    assert response.status == 404 and response.getheader("X-Error-Code") == "EntryNotFound"
    _, response, _ = _request(hub, "GET", "/o/r/resolve/" + "0" * 40 + "/config.json", conn=conn)
    assert response.getheader("X-Error-Code") == "RevisionNotFound"
    hub.fail_next(503)
    _, response, _ = _request(hub, "GET", "/api/models/o/r", conn=conn)
    assert response.status == 503
    _, response, body = _request(hub, "GET", "/api/models/o/r", conn=conn)
    assert response.status == 200 and len(json.loads(body)["sha"]) == 40


def test_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "hf_compress.testing.hub", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--port" in done.stdout


def test_cli_push_and_pull(hub, tmp_path):
    """`hf-compress push DIR REPO` then `hf-compress pull REPO` through the local server."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "weights.bin").write_bytes(os.urandom(2048))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "home"))
    cli = [sys.executable, "-m", "hf_compress.cli"]
    done = subprocess.run(cli + ["push", str(folder), "tester/cli-repo"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pushed" in done.stdout
    done = subprocess.run(cli + ["pull", "tester/cli-repo", "--local_dir", str(tmp_path / "pulled")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "pulled" / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
    done = subprocess.run(cli + ["push", str(tmp_path), "tester/x"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "config.json" in done.stderr


@pytest.mark.parametrize("kind", ["decoder", "decoder-uniform"])
def test_pruned_lm_round_trip_is_bit_identical(hub, tmp_path, kind):
    pushed = run_client(hub, tmp_path / "home-push", "push", f"tester/{kind}", tmp_path / "pushed.safetensors", 0, kind)
    pulled = run_client(hub, tmp_path / "home-pull", "pull", f"tester/{kind}", tmp_path / "pulled.safetensors", "-", kind)
    expected = {"decoder": ("PrunedDecoderForCausalLM", "vtrans_decoder"), "decoder-uniform": ("LlamaForCausalLM", "llama")}
    assert (pulled["class"], pulled["model_type"]) == expected[kind] == (pushed["class"], pushed["model_type"])
    a, b = load_file(tmp_path / "pushed.safetensors"), load_file(tmp_path / "pulled.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["encoder", "decoder", "decoder-uniform"])
def test_pull_without_hf_compress_installed(hub, tmp_path, kind):
    """Non-uniform models carry their modeling code (auto_map): trust_remote_code loads them with
    transformers alone; the uniform LLaMA is a native model and needs no code at all."""
    pushed = run_client(hub, tmp_path / "home-push", "push", f"tester/{kind}-rc", tmp_path / "pushed.safetensors", 3, kind)
    pulled = run_client(hub, tmp_path / "home-pull", "pull-without-plugin", f"tester/{kind}-rc",
                        tmp_path / "pulled.safetensors", kind)
    assert pulled["class"] == pushed["class"] and pulled["heads"] == pushed["heads"]
    if kind != "decoder-uniform":
        assert pulled["module"].startswith("transformers_modules.")  # the pushed code, not hf_compress
    a, b = load_file(tmp_path / "pushed.safetensors"), load_file(tmp_path / "pulled.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def push_pull_and_pull_bare(hub, tmp_path, client: str, repo: str, folder: str) -> tuple[dict, dict, dict]:
    """With ``client`` (a script beside this file), each with its own fresh HF_HOME: push ``tmp_path/folder`` to
    ``repo``; pull it at the pushed commit; pull it with hf-compress hidden (trust_remote_code)."""
    script = os.path.join(os.path.dirname(__file__), client)
    pushed = run_client(hub, tmp_path / "h-push", "push", repo, tmp_path / folder, script=script)
    pulled = run_client(hub, tmp_path / "h-pull", "pull", repo, pushed["commit"], script=script)
    bare = run_client(hub, tmp_path / "h-bare", "pull-without-plugin", repo, script=script)
    return pushed, pulled, bare


def test_ramen_predictor_round_trip_and_pull_without_plugin(hub, tmp_path):
    """A RAMEN encoder + tokenizer + label index pushed as one repo: pulled with a fresh cache it predicts the
    same labels; with hf-compress hidden, trust_remote_code loads the encoder and embeds identically."""
    import numpy as np

    pushed, pulled, bare = push_pull_and_pull_bare(hub, tmp_path, "hub_ramen_client.py", "tester/ramen", "pred")
    assert pulled["class"] == "RamenEncoder" and pulled["top3"] == pushed["top3"]
    assert pulled["checksum"] == pushed["checksum"] == bare["checksum"]
    np.testing.assert_array_equal(np.array(pulled["embeddings"]), np.array(pushed["embeddings"]))
    assert bare["module"].startswith("transformers_modules.") and bare["class"] == "RamenEncoder"
    np.testing.assert_allclose(np.array(bare["embeddings"]), np.array(pushed["embeddings"]), atol=1e-6)


def test_dcanas_network_and_onnx_round_trip_and_pull_without_plugin(hub, tmp_path):
    """A searched network pushed with its ONNX export: pulled with a fresh cache it has the same weights and
    logits, the pulled ONNX file agrees with PyTorch, and trust_remote_code loads it with hf-compress hidden."""
    import numpy as np

    pushed, pulled, bare = push_pull_and_pull_bare(hub, tmp_path, "hub_nas_client.py", "tester/dcanas", "net")
    assert pulled["class"] == bare["class"] == "DCANASForImageClassification"
    assert pulled["checksum"] == pushed["checksum"] == bare["checksum"]
    np.testing.assert_array_equal(np.array(pulled["logits"]), np.array(pushed["logits"]))
    np.testing.assert_allclose(np.array(pulled["onnx_logits"]), np.array(pushed["logits"]), atol=1e-4)
    assert bare["module"].startswith("transformers_modules.")
    np.testing.assert_allclose(np.array(bare["logits"]), np.array(pushed["logits"]), atol=1e-5)
