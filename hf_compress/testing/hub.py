"""A small Hub-compatible HTTP server (standard library only) for tests and offline CI.

It speaks the part of the Hub API that the real ``huggingface_hub`` / ``transformers`` clients use to
create repos, commit files (regular uploads, base64 inside the commit) and download them, and stores
every repo with its revisions on disk. Point a client at it with ``HF_ENDPOINT=http://127.0.0.1:PORT``.

    python -m hf_compress.testing.hub --port 8123 --root /tmp/hub [--token hf_secret]

A commit is applied whole or not at all: a request whose body arrives incomplete (the client or the network
went away mid-upload) is dropped without being acted on, and a branch moves only once the new snapshot is
complete on disk. Downloads honour ``Range`` (clients resume interrupted downloads with it).

For tests, the server can be told to fail the way a real Hub or network does (see :class:`LocalHub`):
require a token (401), forbid a repo (403), answer chosen requests with an HTTP status, or cut a connection
in the middle of an upload or a download.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStore:
    """Repos on disk: ``<root>/<type>s/<namespace>/<name>/{refs.json,commits.json,snapshots/<sha>/...}``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (self.repo_dir(repo_type, repo_id) / "refs.json").is_file()

    def create(self, repo_type: str, repo_id: str) -> None:
        repo = self.repo_dir(repo_type, repo_id)
        (repo / "snapshots").mkdir(parents=True, exist_ok=True)
        sha = self._new_sha(repo_id, "initial commit")
        (repo / "snapshots" / sha).mkdir()
        self._write(repo, {"main": sha}, [{"id": sha, "title": "initial commit", "parents": [], "date": time.time()}])

    def delete(self, repo_type: str, repo_id: str) -> None:
        shutil.rmtree(self.repo_dir(repo_type, repo_id), ignore_errors=True)

    def refs(self, repo_type: str, repo_id: str) -> dict[str, str]:
        return json.loads((self.repo_dir(repo_type, repo_id) / "refs.json").read_text())

    def commits(self, repo_type: str, repo_id: str) -> list[dict]:
        return json.loads((self.repo_dir(repo_type, repo_id) / "commits.json").read_text())

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """Commit sha of a branch name or of a (full) commit id; None if unknown."""
        refs = self.refs(repo_type, repo_id)
        if revision in refs:
            return refs[revision]
        if (self.repo_dir(repo_type, repo_id) / "snapshots" / revision).is_dir():
            return revision
        return None

    def snapshot(self, repo_type: str, repo_id: str, sha: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "snapshots" / sha

    def files(self, repo_type: str, repo_id: str, sha: str) -> list[str]:
        base = self.snapshot(repo_type, repo_id, sha)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def commit(self, repo_type: str, repo_id: str, branch: str, summary: str, ops: list[tuple[str, str, bytes | None]]) -> str:
        """Apply ``(kind, path, content)`` operations (kind: file / deletedFile / deletedFolder) on ``branch``."""
        with self.lock:
            repo = self.repo_dir(repo_type, repo_id)
            refs, log = self.refs(repo_type, repo_id), self.commits(repo_type, repo_id)
            parent = refs.get(branch) or refs["main"]
            sha = self._new_sha(repo_id, summary + str(len(log)))
            target = repo / "snapshots" / f".building-{sha}"  # renamed into place once complete
            shutil.copytree(repo / "snapshots" / parent, target)
            for kind, path, content in ops:
                dest = (target / path).resolve()
                if target.resolve() not in dest.parents:
                    raise ValueError(f"path escapes the repository: {path}")
                if kind == "file":
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(content or b"")
                elif kind == "deletedFile":
                    dest.unlink(missing_ok=True)
                elif kind == "deletedFolder":
                    shutil.rmtree(dest, ignore_errors=True)
            os.replace(target, repo / "snapshots" / sha)
            refs[branch] = sha
            log.insert(0, {"id": sha, "title": summary, "parents": [parent], "date": time.time()})
            self._write(repo, refs, log)
            return sha

    @staticmethod
    def _new_sha(repo_id: str, salt: str) -> str:
        return hashlib.sha1(f"{repo_id}\0{salt}\0{time.time_ns()}".encode()).hexdigest()

    @staticmethod
    def _write(repo: Path, refs: dict, log: list) -> None:
        # each file is replaced atomically, and refs.json (which moves the branches) last
        for name, data in (("commits.json", log), ("refs.json", refs)):
            tmp = repo / f".{name}.tmp"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, repo / name)


@dataclass
class Fault:
    """A failure the server injects into the requests it matches (see :meth:`LocalHub.fail`).

    ``hits`` counts the requests it failed; ``hit`` is set at the first one (tests wait on it).
    """

    status: int | None = None
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    cut: str | None = None
    message: str | None = None
    hits: int = 0
    hit: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str, has_body: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is not None and re.search(self.path, path) is None:
            return False
        if self.cut == "upload" and not has_body:
            return False
        return self.cut != "download" or method == "GET"


class HubHandler(BaseHTTPRequestHandler):
    server_version = "hf-compress-test-hub/0.1"
    protocol_version = "HTTP/1.1"
    store: HubStore  # set on the server class
    fail_next: list[int]  # status codes to answer (once each) before serving normally
    _cut_response = False  # set per request by a cut="download" fault

    # -- plumbing ----------------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # quiet by default
        if os.environ.get("HF_COMPRESS_HUB_VERBOSE"):
            super().log_message(format, *args)

    def _send(self, status: int, payload=None, headers: dict | None = None, head: bool = False) -> None:
        body = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.server.requests.append((self.command, self.path, status))
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if self._cut_response and len(body) > 1:
            self.wfile.write(body[: len(body) // 2])  # the headers promised more: the client sees a cut download
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _forbidden(self, repo_id: str, write: bool, head: bool = False) -> bool:
        """Answer 403 (and return True) when ``repo_id`` is forbidden for this kind of access."""
        rule = self.server.forbidden.get(repo_id)
        if rule is None or (rule == "write" and not write):
            return False
        action = "write to" if write else "access"
        self._error(403, "Forbidden", f"You don't have the rights to {action} {repo_id}", head=head)
        return True

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host', '127.0.0.1')}"

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        head = method == "HEAD"
        length = int(self.headers.get("Content-Length") or 0)
        self._cut_response = False
        fault = self.server.take_fault(method, url.path, length > 0)
        # Always read the whole body, or it leaks into the next request on this connection. A body that ends
        # early means the upload was interrupted: drop the connection without acting on any of it.
        limit = length // 2 if fault is not None and fault.cut == "upload" else length
        body = self.rfile.read(limit) if limit else b""
        if len(body) < length:
            self.server.requests.append((method, self.path, None))
            self.close_connection = True
            return
        if fault is not None and fault.status is not None:
            message = fault.message or f"injected failure {fault.status}"
            return self._error(fault.status, "InjectedFailure", message, head=head)
        self._cut_response = fault is not None and fault.cut == "download"
        if self.server.fail_next:
            status = self.server.fail_next.pop(0)
            return self._error(status, "InjectedFailure", f"injected failure {status}", head=head)
        token = self.server.token
        if token is not None:
            sent = self.headers.get("Authorization", "")
            if not sent:
                return self._error(401, "Unauthorized", "Authentication required: this Hub needs a token", head=head)
            if sent != f"Bearer {token}":
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header", head=head)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            if parts[:1] == ["api"]:
                return self._api(method, parts[1:], body, query)
            return self._resolve(method, parts)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            return self._error(400, "BadRequest", str(err), head=method == "HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    # -- /api ----------------------------------------------------------------------------------------
    def _api(self, method: str, parts: list[str], body: bytes, query: dict) -> None:
        store = self.server.store
        if parts == ["whoami-v2"]:
            return self._send(200, {"type": "user", "name": "hf-compress-tester", "fullname": "Test User",
                                    "orgs": [], "auth": {"accessToken": {"displayName": "test", "role": "write"}}})
        if parts == ["validate-yaml"]:
            return self._send(200, {"errors": [], "warnings": []})
        if parts in (["repos", "create"], ["repos", "delete"]):
            request = json.loads(body or b"{}")
            repo_type = request.get("type") or "model"
            name = request["name"]
            repo_id = f"{request['organization']}/{name}" if request.get("organization") else name
            if "/" not in repo_id:
                repo_id = f"hf-compress-tester/{repo_id}"
            if self._forbidden(repo_id, write=True):
                return None
            if parts[1] == "delete":
                if not store.exists(repo_type, repo_id):
                    return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                store.delete(repo_type, repo_id)
                return self._send(200, {})
            url = f"{self._base_url()}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            if store.exists(repo_type, repo_id):
                return self._send(409, {"error": "You already created this repo", "url": url},
                                  {"X-Error-Code": "RepoExists"})
            store.create(repo_type, repo_id)
            return self._send(200, {"url": url, "name": repo_id, "id": repo_id})
        if len(parts) >= 3 and parts[0] in _TYPES:
            repo_type, repo_id, rest = _TYPES[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
            if self._forbidden(repo_id, write=method not in ("GET", "HEAD"), head=method == "HEAD"):
                return None
            if not store.exists(repo_type, repo_id):
                return self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}", head=method == "HEAD")
            return self._repo_api(method, repo_type, repo_id, rest, body, query)
        return self._error(404, "EndpointNotFound", f"not implemented by the test hub: {method} {self.path}")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str], body: bytes, query: dict) -> None:
        store = self.server.store
        if not rest or rest[0] == "revision":
            revision = rest[1] if len(rest) > 1 else "main"
            sha = store.resolve(repo_type, repo_id, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = store.files(repo_type, repo_id, sha)
            base = store.snapshot(repo_type, repo_id, sha)
            return self._send(200, {
                "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha, "private": False,
                "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": f, "size": (base / f).stat().st_size} for f in files],
            })
        if rest[0] == "preupload":
            files = json.loads(body or b"{}").get("files", [])
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files], "commitOid": None})
        if rest[0] == "commit" and method == "POST":
            branch = rest[1] if len(rest) > 1 else "main"
            if store.resolve(repo_type, repo_id, branch) is None and branch not in ("main",):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            summary, ops = "commit", []
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", summary)
                elif key == "file":
                    content = value["content"]
                    data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    ops.append(("file", value["path"], data))
                elif key in ("deletedFile", "deletedFolder"):
                    ops.append((key, value["path"], None))
                elif key == "lfsFile":
                    return self._error(400, "BadRequest", "LFS uploads are not supported by the test hub")
            sha = store.commit(repo_type, repo_id, branch, summary, ops)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._send(200, {"success": True, "commitOid": sha,
                                    "commitUrl": f"{self._base_url()}/{prefix}{repo_id}/commit/{sha}"})
        if rest[0] == "tree":
            revision = rest[1] if len(rest) > 1 else "main"
            sub = "/".join(rest[2:])
            sha = store.resolve(repo_type, repo_id, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            base = store.snapshot(repo_type, repo_id, sha)
            folder = base / sub if sub else base
            if not folder.is_dir():
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {revision}")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = []
            for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
                rel = str(path.relative_to(base))
                if path.is_dir():
                    entries.append({"type": "directory", "path": rel, "oid": hashlib.sha1(rel.encode()).hexdigest()})
                else:
                    data = path.read_bytes()
                    entries.append({"type": "file", "path": rel, "size": len(data), "oid": _git_blob_sha1(data)})
            return self._send(200, entries)
        if rest[0] == "commits":
            return self._send(200, [{"id": c["id"], "title": c["title"], "message": "", "authors": [],
                                     "date": "2026-01-01T00:00:00.000Z"} for c in store.commits(repo_type, repo_id)])
        if rest[0] == "refs":
            refs = store.refs(repo_type, repo_id)
            return self._send(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                                                 for b, s in refs.items()], "tags": [], "converts": []})
        return self._error(404, "EndpointNotFound", f"not implemented by the test hub: {method} {self.path}")

    # -- /{repo}/resolve/{rev}/{path} ---------------------------------------------------------------
    def _resolve(self, method: str, parts: list[str]) -> None:
        head = method == "HEAD"
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = _TYPES[parts[0]], parts[1:]
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "EndpointNotFound", f"not implemented by the test hub: {method} {self.path}", head)
        repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        store = self.server.store
        if self._forbidden(repo_id, write=False, head=head):
            return None
        if not store.exists(repo_type, repo_id):
            return self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}", head)
        sha = store.resolve(repo_type, repo_id, revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        file = store.snapshot(repo_type, repo_id, sha) / path
        if not file.is_file():
            return self._error(404, "EntryNotFound", f"{path} does not exist at {revision}", head)
        data = file.read_bytes()
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_sha1(data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if wanted is None:
            return self._send(200, data, headers, head=head)
        start = int(wanted.group(1))
        end = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data) or end < start:
            return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, head=head)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start : end + 1], headers, head=head)


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, store: HubStore, token: str | None) -> None:
        super().__init__(address, HubHandler)
        self.store = store
        self.token = token
        self.fail_next: list[int] = []
        self.faults: list[Fault] = []
        self.forbidden: dict[str, str] = {}  # repo id -> "all" | "write"
        self.requests: list[tuple[str, str, int | None]] = []
        self.fault_lock = threading.Lock()

    def take_fault(self, method: str, path: str, has_body: bool) -> Fault | None:
        """The first fault matching this request, counted as hit; None if none does."""
        with self.fault_lock:
            for fault in self.faults:
                if fault.matches(method, path, has_body):
                    fault.hits += 1
                    fault.hit.set()
                    return fault
        return None


class LocalHub:
    """A running test hub: ``with LocalHub(root) as hub: os.environ["HF_ENDPOINT"] = hub.url``.

    With ``token``, every request must carry ``Authorization: Bearer <token>`` (a private Hub): none gets a
    401 ``Authentication required``, another one a 401 ``Invalid credentials in Authorization header``.
    ``requests`` lists ``(method, path, status)`` of every request answered (status None: dropped).
    """

    def __init__(
        self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        self.server = _HubServer((host, port), HubStore(root), token)
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)

    @property
    def store(self) -> HubStore:
        return self.server.store

    @property
    def requests(self) -> list[tuple[str, str, int | None]]:
        return self.server.requests

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP statuses (one each), e.g. to test retries."""
        self.server.fail_next.extend(statuses)

    def fail(self, status: int | None = None, *, method: str | None = None, path: str | None = None,
             times: int | None = 1, cut: str | None = None, message: str | None = None) -> Fault:
        r"""Fail the requests matching ``method`` and ``path`` (a regular expression searched in the URL path,
        e.g. ``r"^/api/models/o/r/commit/"`` or ``r"/resolve/.*/model\.safetensors$"``), ``times`` of them
        (None: all), and return the :class:`Fault` (``hits``, ``hit`` event).

        Either answer with ``status`` (Hub-style ``X-Error-Code`` / ``X-Error-Message``), or ``cut`` the
        connection: ``"upload"`` reads half of the request body and drops the connection (an interrupted
        upload: nothing of it is applied); ``"download"`` sends the headers and half of the body of a GET's
        answer, then drops the connection (an interrupted download).
        """
        if (status is None) == (cut is None):
            raise ValueError("pass either a status or cut='upload' / cut='download'")
        if cut not in (None, "upload", "download"):
            raise ValueError(f"cut must be 'upload' or 'download', got {cut!r}")
        fault = Fault(status=status, method=method, path=path, times=times, cut=cut, message=message)
        with self.server.fault_lock:
            self.server.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every injected failure (``fail``, ``fail_next``) and forbidden repo."""
        with self.server.fault_lock:
            self.server.faults.clear()
            self.server.fail_next.clear()
            self.server.forbidden.clear()

    def forbid(self, repo_id: str, write_only: bool = False) -> None:
        """Answer 403 to requests on ``repo_id`` (only to writes, like a read-only token, with ``write_only``)."""
        self.server.forbidden[repo_id] = "write" if write_only else "all"

    def start(self) -> LocalHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a Hub-compatible API from a local folder.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--root", default="hub-data", help="folder holding the repos")
    parser.add_argument("--token", default=None, help="require this token on every request (a private Hub)")
    args = parser.parse_args(argv)
    hub = LocalHub(args.root, args.host, args.port, token=args.token)
    print(f"hf-compress test hub on {hub.url} (repos in {os.path.abspath(args.root)}); HF_ENDPOINT={hub.url}")
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.server.server_close()


if __name__ == "__main__":
    main()
