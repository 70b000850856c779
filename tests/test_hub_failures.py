"""Hub failures against the local server told to fail: missing / wrong token (401), no access (403), missing
repo / revision / file (404), a server that is down, transient 503s, interrupted downloads and uploads, a repo
that already exists, a corrupt checkpoint. The real huggingface_hub client runs in a separate process
(tests/hub_failure_client.py; the pytest process is offline); ``hf_compress.hub`` must turn each failure into
one clear :class:`HubError`, retry only what is safe, and leave nothing half-written.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from hf_compress.testing import LocalHub
from helpers import hub_env

TOKEN = "hf_good_token"
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub_failure_client.py")
CLI = [sys.executable, "-m", "hf_compress.cli"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A private Hub: every request needs ``TOKEN``."""
    with LocalHub(tmp_path_factory.mktemp("hub-data"), token=TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_left(hub):
    yield
    hub.clear_faults()


class Worker:
    def __init__(self, hub, home, log) -> None:
        self.hub = hub
        self.log = log
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, env=hub_env(hub, home, token=None))

    def call(self, op: str, **kwargs) -> dict:
        kwargs.setdefault("endpoint", self.hub.url)
        kwargs.setdefault("token", TOKEN)
        if op == "pull":
            kwargs.setdefault("backoff", 0.01)
        kwargs = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in kwargs.items()}
        self.proc.stdin.write(json.dumps({"op": op, "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        assert ready, f"client timed out; its log:\n{open(self.log).read()[-3000:]}"
        answer = json.loads(self.proc.stdout.readline() or '{"ok": false, "type": "died", "message": ""}')
        assert answer["ok"] or answer["type"] == "HubError", (answer, open(self.log).read()[-3000:])
        return answer

    def push(self, folder, repo_id: str, **kwargs) -> dict:
        answer = self.call("push", folder=folder, repo_id=repo_id, **kwargs)
        assert answer["ok"], answer
        return answer["result"]


@pytest.fixture(scope="module")
def worker(hub, tmp_path_factory):
    base = tmp_path_factory.mktemp("worker")
    client = Worker(hub, base / "home", base / "client.log")
    yield client
    client.proc.stdin.close()
    client.proc.wait(timeout=60)


def make_folder(path, seed: int):
    """A tiny save_pretrained-like folder: config.json + model.safetensors (16 KiB of seeded weights)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "seed": seed}))
    torch.manual_seed(seed)
    save_file({"weight": torch.randn(64, 64)}, path / "model.safetensors")
    return path


def folder_bytes(path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def remote_files(hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    sha = hub.store.resolve("model", repo_id, revision)
    return folder_bytes(hub.store.snapshot("model", repo_id, sha))


def main_of(hub, repo_id: str) -> str:
    return hub.store.refs("model", repo_id)["main"]


def failed(answer: dict, status, *words: str) -> str:
    assert not answer["ok"] and answer["status"] == status, answer
    for word in words:
        assert word in answer["message"], (word, answer["message"])
    return answer["message"]


def test_missing_or_wrong_token_is_a_clear_401_and_not_retried(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "m", 0), "tester/auth")
    for token, words in ((False, "none was sent"), ("hf_wrong", "rejected the token")):
        start = len(hub.requests)
        pushed = worker.call("push", folder=tmp_path / "m", repo_id="tester/auth", token=token)
        pulled = worker.call("pull", repo_id="tester/auth", local_dir=tmp_path / "out", token=token, retries=3)
        for answer in (pushed, pulled):
            failed(answer, 401, words, "HF_TOKEN", "hf auth login")
            assert not answer["retryable"]
        assert [status for _, _, status in hub.requests[start:]] == [401, 401]  # one request each: no retry
    assert not (tmp_path / "out").exists()


def test_forbidden_repo_is_a_clear_403(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "v0", 0), "tester/locked")
    before = main_of(hub, "tester/locked")
    hub.forbid("tester/locked", write_only=True)  # a read-only token
    failed(worker.call("push", folder=make_folder(tmp_path / "v1", 1), repo_id="tester/locked"), 403,
           "forbidden", "write access", "tester/locked")
    assert main_of(hub, "tester/locked") == before
    assert worker.call("pull", repo_id="tester/locked", local_dir=tmp_path / "read")["ok"]
    hub.forbid("tester/locked")
    failed(worker.call("pull", repo_id="tester/locked", local_dir=tmp_path / "denied"), 403, "read access")
    assert not (tmp_path / "denied").exists()


def test_missing_repo_revision_and_file_are_clear_404s_and_not_retried(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "m", 0), "tester/exists")
    cases = [
        (dict(repo_id="tester/nope"), ("repository tester/nope was not found", "check the repo id")),
        (dict(repo_id="tester/exists", revision="v9"), ("has no revision 'v9'", "branch, tag or commit")),
        (dict(repo_id="tester/exists", filenames=["nope.bin"]), ("has no nope.bin", "check the file name")),
    ]
    for kwargs, words in cases:
        start = len(hub.requests)
        failed(worker.call("pull", local_dir=tmp_path / "out", retries=3, **kwargs), 404, *words)
        answered = hub.requests[start:]
        assert answered and {status for _, _, status in answered} == {404}
        assert len({(method, path) for method, path, _ in answered}) == len(answered)  # nothing asked twice
    assert not (tmp_path / "out").exists()


def test_server_down_names_the_endpoint_pull_retries_push_does_not(worker, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    pulled = worker.call("pull", repo_id="tester/any", local_dir=tmp_path / "out", endpoint=down, retries=2)
    message = failed(pulled, None, "cannot reach the Hub at " + down, "HF_ENDPOINT", "gave up after 3 attempts")
    assert pulled["retryable"] and "Traceback" not in message
    pushed = worker.call("push", folder=make_folder(tmp_path / "m", 0), repo_id="tester/any", endpoint=down)
    assert "cannot reach the Hub" in failed(pushed, None) and "gave up" not in pushed["message"]
    assert not (tmp_path / "out").exists()


def test_transient_503s_on_download_are_retried(hub, worker, tmp_path):
    local = make_folder(tmp_path / "m", 3)
    worker.push(local, "tester/flaky")
    info = hub.fail(503, method="GET", path="^/api/models/tester/flaky", times=1)
    blob = hub.fail(503, method="GET", path=r"^/tester/flaky/resolve/.*/model\.safetensors$", times=2)
    pulled = worker.call("pull", repo_id="tester/flaky", local_dir=tmp_path / "out", retries=3)
    assert pulled["ok"], pulled
    assert (info.hits, blob.hits) == (1, 2)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).read_bytes() == (local / name).read_bytes()


def test_a_cut_download_is_fetched_again_and_bit_identical(hub, worker, tmp_path):
    local = make_folder(tmp_path / "m", 4)
    worker.push(local, "tester/resume")
    cut = hub.fail(cut="download", path=r"^/tester/resume/resolve/.*/model\.safetensors$", times=1)
    pulled = worker.call("pull", repo_id="tester/resume", local_dir=tmp_path / "out", retries=0)
    assert pulled["ok"], pulled
    assert cut.hits == 1
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()


def test_a_failed_pull_leaves_no_local_dir_and_no_leftovers(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "m", 5), "tester/broken")
    hub.fail(503, method="GET", path=r"^/tester/broken/resolve/.*/model\.safetensors$", times=None)
    before = sorted(os.listdir(tmp_path))
    target = tmp_path / "new" / "deeper" / "model"
    failed(worker.call("pull", repo_id="tester/broken", local_dir=target, retries=1), 503, "503", "try again later",
           "gave up after 2 attempts")
    assert sorted(os.listdir(tmp_path)) == before  # neither the target nor its parents nor a staging folder


def test_an_interrupted_download_keeps_the_existing_local_dir(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "v0", 6), "tester/update")
    target = tmp_path / "pulled"
    assert worker.call("pull", repo_id="tester/update", local_dir=target)["ok"]
    (target / "notes.txt").write_text("mine")
    before = folder_bytes(target)
    v1 = make_folder(tmp_path / "v1", 7)
    worker.push(v1, "tester/update")
    hub.fail(cut="download", path=r"^/tester/update/resolve/.*/model\.safetensors$", times=None)
    failed(worker.call("pull", repo_id="tester/update", local_dir=target, retries=0), None,
           "connection to", "dropped during the download", "run the pull again")
    assert folder_bytes(target) == before  # not a byte changed
    assert sorted(os.listdir(tmp_path)) == ["pulled", "v0", "v1"]  # no staging folder left
    hub.clear_faults()
    assert worker.call("pull", repo_id="tester/update", local_dir=target)["ok"]
    assert (target / "model.safetensors").read_bytes() == (v1 / "model.safetensors").read_bytes()
    assert (target / "notes.txt").read_text() == "mine"  # files the repo does not have are kept


def test_server_never_applies_a_partial_commit(hub, worker, tmp_path):
    """A commit body that stops early (here: after a whole, valid file line) is dropped, not half-applied."""
    worker.push(make_folder(tmp_path / "m", 8), "tester/atomic")
    before = main_of(hub, "tester/atomic")
    lines = [{"key": "header", "value": {"summary": "two files"}},
             {"key": "file", "value": {"path": "a.txt", "content": "YQ==", "encoding": "base64"}},
             {"key": "file", "value": {"path": "b.txt", "content": "Yg==", "encoding": "base64"}}]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    sent = body[: body.index(b'{"key": "file", "value": {"path": "b.txt"')]
    conn = http.client.HTTPConnection(hub.url.split("//")[1])
    conn.putrequest("POST", "/api/models/tester/atomic/commit/main")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(sent)
    conn.sock.shutdown(socket.SHUT_WR)  # the client goes away mid-upload
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert hub.requests[-1] == ("POST", "/api/models/tester/atomic/commit/main", None)
    assert main_of(hub, "tester/atomic") == before and "a.txt" not in remote_files(hub, "tester/atomic")


def test_server_serves_byte_ranges(hub, worker, tmp_path):
    """Clients resume a large interrupted download with ``Range``: the server answers 206 with those bytes."""
    local = make_folder(tmp_path / "m", 20)
    data = (local / "model.safetensors").read_bytes()
    worker.push(local, "tester/ranges")
    conn = http.client.HTTPConnection(hub.url.split("//")[1])
    for wanted, status, expected in (("bytes=100-", 206, data[100:]), ("bytes=10-19", 206, data[10:20]),
                                     (f"bytes={len(data)}-", 416, b""), (None, 200, data)):
        headers = {"Authorization": f"Bearer {TOKEN}"} | ({"Range": wanted} if wanted else {})
        conn.request("GET", "/tester/ranges/resolve/main/model.safetensors", headers=headers)
        response = conn.getresponse()
        assert (response.status, response.read()) == (status, expected)
        if status == 206:
            end = len(data) - 1 if wanted.endswith("-") else 19
            assert response.getheader("Content-Range") == f"bytes {wanted[6:].split('-')[0]}-{end}/{len(data)}"
    conn.close()


def test_an_interrupted_push_leaves_main_unchanged_and_pushing_again_works(hub, worker, tmp_path):
    """`hf-compress push` killed while its commit upload is cut off: the repo is as before; a new push lands."""
    v0 = make_folder(tmp_path / "v0", 9)
    worker.push(v0, "tester/interrupted")
    before, files = main_of(hub, "tester/interrupted"), remote_files(hub, "tester/interrupted")
    v1 = make_folder(tmp_path / "v1", 10)
    cut = hub.fail(cut="upload", method="POST", path="^/api/models/tester/interrupted/commit/", times=None)
    with open(tmp_path / "push.log", "w") as log:
        proc = subprocess.Popen(CLI + ["push", str(v1), "tester/interrupted"], stdout=log, stderr=log,
                                env=hub_env(hub, tmp_path / "home", token=TOKEN))
        try:
            assert cut.hit.wait(180), (tmp_path / "push.log").read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait(timeout=60)
    dropped = ("POST", "/api/models/tester/interrupted/commit/main", None)
    deadline = time.monotonic() + 30
    while dropped not in hub.requests and time.monotonic() < deadline:  # the server may still be reading it
        time.sleep(0.05)
    assert dropped in hub.requests  # the upload reached the server and was dropped, not applied
    assert main_of(hub, "tester/interrupted") == before and remote_files(hub, "tester/interrupted") == files
    assert files["model.safetensors"] == (v0 / "model.safetensors").read_bytes()
    hub.clear_faults()
    again = worker.push(v1, "tester/interrupted")
    assert main_of(hub, "tester/interrupted") == again["commit"] != before and not again["created"]
    assert remote_files(hub, "tester/interrupted")["model.safetensors"] == (v1 / "model.safetensors").read_bytes()


def test_a_dropped_commit_upload_is_resent_and_lands_once(hub, worker, tmp_path):
    worker.push(make_folder(tmp_path / "v0", 11), "tester/resent")
    commits = len(hub.store.commits("model", "tester/resent"))
    cut = hub.fail(cut="upload", method="POST", path="^/api/models/tester/resent/commit/", times=1)
    v1 = make_folder(tmp_path / "v1", 12)
    pushed = worker.push(v1, "tester/resent")
    assert cut.hits == 1 and len(hub.store.commits("model", "tester/resent")) == commits + 1
    assert main_of(hub, "tester/resent") == pushed["commit"]
    assert remote_files(hub, "tester/resent")["model.safetensors"] == (v1 / "model.safetensors").read_bytes()


def test_existing_repo_gets_a_commit_on_top_unless_new_repo(hub, worker, tmp_path):
    first = worker.push(make_folder(tmp_path / "v0", 13), "tester/existing")
    v1 = make_folder(tmp_path / "v1", 14)
    second = worker.push(v1, "tester/existing")
    assert first["created"] and not second["created"] and second["commit"] != first["commit"]
    assert remote_files(hub, "tester/existing")["model.safetensors"] == (v1 / "model.safetensors").read_bytes()
    refused = worker.call("push", folder=make_folder(tmp_path / "v2", 15), repo_id="tester/existing", new_repo=True)
    failed(refused, 409, "tester/existing already exists", "--new_repo")
    assert main_of(hub, "tester/existing") == second["commit"]


def test_corrupt_checkpoint_is_refused_before_any_request(hub, worker, tmp_path):
    truncated = make_folder(tmp_path / "truncated", 16)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-100])
    header_cut = make_folder(tmp_path / "header", 17)
    (header_cut / "model.safetensors").write_bytes(data[:20])
    no_config = make_folder(tmp_path / "no-config", 18)
    (no_config / "config.json").unlink()
    start = len(hub.requests)
    for folder, words in ((truncated, ("model.safetensors", f"has {len(data) - 100:,} bytes", "truncated")),
                          (header_cut, ("model.safetensors", "header", "re-save")),
                          (no_config, ("no config.json", "save_pretrained"))):
        failed(worker.call("push", folder=folder, repo_id="tester/corrupt"), None, *words)
    assert len(hub.requests) == start and not hub.store.exists("model", "tester/corrupt")


def test_cli_prints_one_error_line_and_exits_non_zero(hub, tmp_path):
    corrupt = make_folder(tmp_path / "corrupt", 19)
    (corrupt / "model.safetensors").write_bytes((corrupt / "model.safetensors").read_bytes()[:-8])
    runs = [
        (["pull", "tester/whatever", "--local_dir", str(tmp_path / "out")], "hf_wrong", "rejected the token"),
        (["push", str(corrupt), "tester/corrupt-cli"], TOKEN, "truncated or corrupt"),
    ]
    for args, token, words in runs:
        done = subprocess.run(CLI + args, capture_output=True, text=True, env=hub_env(hub, tmp_path / "home", token),
                              timeout=300)
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert done.returncode == 1, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-2000:]
        assert errors[0].startswith(f"hf-compress {args[0]}: error: ") and words in errors[0]
    assert not (tmp_path / "out").exists()
