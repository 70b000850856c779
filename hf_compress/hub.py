"""Push a saved model folder to the Hub and pull a repo back, with clear errors and safe retries.

``hf-compress push`` / ``hf-compress pull`` are thin wrappers around :func:`push_folder` and :func:`pull_repo`.
Every failure is raised as one exception type, :class:`HubError`, whose message names the problem and the fix
(a missing or rejected token, a repo / revision / file that does not exist, no access, an unreachable server,
an interrupted transfer, a corrupt checkpoint).

What is retried, and what is not:

* Pulls (repo info, file listing and file downloads: GET / HEAD requests, safe to repeat) are retried on
  connection errors, timeouts, dropped connections and HTTP 408 / 429 / 5xx, ``retries`` times with
  exponential backoff starting at ``backoff`` seconds (defaults: ``HF_COMPRESS_HUB_RETRIES`` = 3,
  ``HF_COMPRESS_HUB_BACKOFF`` = 1.0). 401 / 403 / 404 are never retried: repeating them cannot help.
* Pushes are not retried by hf-compress: creating a repo or a commit is not idempotent. (huggingface_hub
  itself re-sends a commit whose connection dropped.) A commit is applied by the Hub whole or not at all, so an
  interrupted push leaves the repo as it was or fully updated; run it again.

Nothing is half-written locally: a pull downloads into a temporary folder next to ``local_dir`` and moves the
files into place only once all of them are complete, and a push checks the folder (``config.json``, readable,
complete safetensors / PyTorch files) before any network call.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

logger = logging.getLogger("hf_compress")

# files written next to a model by the hf-compress trainers that do not belong in a Hub repo
DEFAULT_IGNORE_PATTERNS = ("checkpoint-*", "finetune/*", "teacher/*")
_MAX_WAIT_S = 30.0


class HubError(Exception):
    """A push or pull that failed; the message says what went wrong and how to fix it.

    ``status``: the HTTP status the Hub answered (None when there was no answer or no request);
    ``retryable``: whether repeating the same request may succeed (network trouble, 408 / 429 / 5xx).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass
class PushResult:
    """What :func:`push_folder` did."""

    repo_id: str
    commit: str
    created: bool  # False: the repo existed and the push added a commit on top of it
    url: str


# -- push --------------------------------------------------------------------------------------------------

def validate_folder(folder: str | os.PathLike, ignore_patterns=DEFAULT_IGNORE_PATTERNS) -> list[str]:
    """Check a folder before uploading it; return the files that would be pushed.

    It must hold ``config.json`` (a model) or ``adapter_config.json`` (a PEFT adapter) as a JSON object, and
    every ``*.safetensors`` file must be complete (its header readable, its size what the header describes);
    ``model.safetensors.index.json`` must name shards that are there; zip-format PyTorch files must open.
    Raises :class:`HubError` naming the bad file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise HubError(f"{folder} is not a folder: pass the folder written by save_pretrained.")
    files = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and not any(fnmatch(p.relative_to(root).as_posix(), pat) for pat in ignore_patterns)
    )
    configs = [name for name in ("config.json", "adapter_config.json") if name in files]
    if not configs:
        raise HubError(f"{folder} has no config.json (nor adapter_config.json): pass a folder written by "
                       "save_pretrained.")
    for name in configs:
        try:
            if not isinstance(json.loads((root / name).read_text()), dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            raise HubError(f"{root / name} is not valid JSON ({err}): re-save the model with save_pretrained.") from err
    for name in files:
        path = root / name
        if name.endswith(".safetensors"):
            _check_safetensors(path)
        elif name.endswith(".safetensors.index.json"):
            try:
                shards = set(json.loads(path.read_text())["weight_map"].values())
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise HubError(f"{path} is not a valid shard index ({err}): re-save the model.") from err
            missing = sorted(s for s in shards if s not in files)
            if missing:
                raise HubError(f"{path} names shards that are not in the folder: {missing[:5]}. Re-save the model.")
        elif name.endswith((".bin", ".pt", ".pth")) and path.read_bytes()[:2] == b"PK":
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.namelist()
            except (zipfile.BadZipFile, OSError) as err:
                raise HubError(f"{path} is truncated or corrupt ({err}): re-save the model.") from err
    return files


def _check_safetensors(path: Path) -> None:
    fix = "it is truncated or corrupt (an interrupted save or copy?): re-save the model with save_pretrained."
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if header_len < 2 or header_len > size - 8:
            raise HubError(f"{path} is not a readable safetensors file (its header is cut short): {fix}")
        try:
            header = json.loads(handle.read(header_len))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise HubError(f"{path} is not a readable safetensors file (bad header: {err}): {fix}") from err
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        raise HubError(f"{path} has {size:,} bytes but its header describes {expected:,}: {fix}")


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    new_repo: bool = False,
    private: bool = False,
    commit_message: str = "Upload with hf-compress",
    token: str | bool | None = None,
    endpoint: str | None = None,
    ignore_patterns=DEFAULT_IGNORE_PATTERNS,
) -> PushResult:
    """Upload ``folder`` to ``repo_id`` as one commit on ``main``; the repo is created if needed.

    If the repo already exists the commit goes on top of it (``PushResult.created`` is False); with
    ``new_repo=True`` an existing repo is an error instead. The folder is checked (:func:`validate_folder`)
    before anything is sent. Not retried (see the module docstring); failures raise :class:`HubError`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    validate_folder(folder, ignore_patterns)
    api = HfApi(endpoint=endpoint, token=token)
    created = True
    try:
        try:
            url = str(api.create_repo(repo_id, private=private, exist_ok=False))
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status != 409 and (new_repo or status not in (402, 403)):
                raise
            if new_repo:
                raise HubError(
                    f"{repo_id} already exists on {api.endpoint} and --new_repo / new_repo=True was asked: choose "
                    "another name, or drop --new_repo to add a commit on top of the existing repo.", status=409,
                ) from err
            # 409: it exists. 402 / 403: no right to create here, but it may exist and be writable.
            url = str(api.create_repo(repo_id, private=private, exist_ok=True))
            created = False
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                                 ignore_patterns=list(ignore_patterns))
    except HubError:
        raise
    except Exception as err:
        error = hub_error(err, repo_id, endpoint=api.endpoint, action="push")
        if error is None:
            raise
        raise error from err
    return PushResult(repo_id=repo_id, commit=info.oid, created=created, url=url)


# -- pull --------------------------------------------------------------------------------------------------

def pull_repo(
    repo_id: str,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    *,
    filenames: list[str] | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    retries: int | None = None,
    backoff: float | None = None,
) -> str:
    """Download a repo (or only ``filenames`` from it) at ``revision``; return the local folder.

    Without ``local_dir`` the files go to the Hugging Face cache, as with ``snapshot_download``. With it, they
    are downloaded into a temporary folder next to ``local_dir`` and moved into place only when all are
    complete: a failed or interrupted pull leaves ``local_dir`` as it was (absent, or with its previous files).
    Files of an existing ``local_dir`` that the repo does not have are kept. Retries: see the module docstring.
    """
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    retries = int(os.environ.get("HF_COMPRESS_HUB_RETRIES", 3)) if retries is None else retries
    backoff = float(os.environ.get("HF_COMPRESS_HUB_BACKOFF", 1.0)) if backoff is None else backoff

    def download(into: str | None) -> str:
        common = dict(revision=revision, token=token, endpoint=endpoint)
        if not filenames:
            return snapshot_download(repo_id, local_dir=into, **common)
        paths = [hf_hub_download(repo_id, name, local_dir=into, **common) for name in filenames]
        return into or str(Path(paths[0]).parents[len(Path(filenames[0]).parts) - 1])

    target = None if local_dir is None else Path(local_dir)
    if target is not None and target.exists() and not target.is_dir():
        raise HubError(f"{target} exists and is not a folder: pass another --local_dir.")
    attempt = 0
    while True:
        staging, made = (None, []) if target is None else _staging_folder(target)
        try:
            path = download(staging)
            if target is None:
                return path
            _move_into_place(Path(staging), target)
            return str(target.resolve())
        except Exception as err:
            error = hub_error(err, repo_id, revision=revision, endpoint=endpoint or constants.ENDPOINT,
                              action="pull", filenames=filenames)
            if error is None:
                raise
            if not error.retryable or attempt >= retries:
                if attempt:
                    error.args = (f"{error.args[0]} (gave up after {attempt + 1} attempts)",)
                raise error from err
            wait = min(backoff * 2**attempt, _MAX_WAIT_S)
            attempt += 1
            logger.warning("%s Retrying in %.1f s (retry %d of %d).", error, wait, attempt, retries)
            time.sleep(wait)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
                for folder in reversed(made):  # parents created for the staging folder, if still empty
                    try:
                        folder.rmdir()
                    except OSError:
                        break


def _staging_folder(target: Path) -> tuple[str, list[Path]]:
    """An empty folder next to ``target`` (same file system: the final move is a rename), and the parent
    folders that had to be created for it."""
    made, parent = [], target.absolute().parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    made.reverse()
    for folder in made:
        folder.mkdir()
    return tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.absolute().parent), made


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)  # one rename: the folder appears complete or not at all
        return
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            dest = target / path.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)


# -- errors ------------------------------------------------------------------------------------------------

def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def hub_error(err: BaseException, repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
              action: str = "pull", filenames: list[str] | None = None) -> HubError | None:
    """The :class:`HubError` explaining ``err`` (an exception raised by huggingface_hub during a push or pull
    of ``repo_id``), or None when it is not a Hub or network error."""
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RemoteEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, HubError):
        return err
    transport = _transport_errors()
    endpoint = endpoint or "the Hub"
    rev = revision or "main"
    for cause in _chain(err):
        if isinstance(cause, OfflineModeIsEnabled):
            return HubError(f"cannot {action} {repo_id}: HF_HUB_OFFLINE is set, so no request is made. Unset "
                            "HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to reach the Hub.")
        if isinstance(cause, transport):
            return _transport_error(cause, repo_id, endpoint, action)
        if not isinstance(cause, HfHubHTTPError):
            continue
        response = cause.response
        status = response.status_code if response is not None else None
        said = (cause.server_message or "").strip().rstrip(".")
        said = f" ({status} {said})" if said else f" ({status})"
        if isinstance(cause, RevisionNotFoundError):
            return HubError(f"{repo_id} has no revision '{rev}'{said}: check the branch, tag or commit id "
                            "(without --revision / revision= the pull takes main).", status=status)
        if isinstance(cause, RemoteEntryNotFoundError):
            wanted = ", ".join(filenames) if filenames else "a file it lists"
            return HubError(f"{repo_id} at revision '{rev}' has no {wanted}{said}: check the file name and the "
                            "revision.", status=status)
        if isinstance(cause, GatedRepoError):
            return HubError(f"{repo_id} is gated{said}: accept its conditions on the repo page with the account "
                            "of your token.", status=status)
        if isinstance(cause, RepositoryNotFoundError) or status == 404:
            return HubError(f"repository {repo_id} was not found on {endpoint}{said}: check the repo id "
                            "(namespace/name); if it is private, set HF_TOKEN (or run `hf auth login`) with an "
                            "account that can read it.", status=status)
        if status == 401:
            if not _token_sent(response):
                return HubError(f"{endpoint} requires a token and none was sent{said}: set HF_TOKEN or run "
                                "`hf auth login`.", status=status)
            return HubError(f"{endpoint} rejected the token{said}: the token is invalid or expired; set a valid "
                            "HF_TOKEN or run `hf auth login` again.", status=status)
        if status == 403:
            need = "write" if action == "push" else "read"
            return HubError(f"access to {repo_id} is forbidden{said}: your token has no {need} access to it. Use "
                            f"a token with {need} permission, ask the owner for access, or "
                            f"{'push to a namespace you own' if action == 'push' else 'check the repo id'}.",
                            status=status)
        if status in (408, 429) or (status or 0) >= 500:
            return HubError(f"{endpoint} answered {status} while trying to {action} {repo_id}{said}: the server is "
                            "overloaded or failing; try again later.", status=status, retryable=True)
        return HubError(f"{action} of {repo_id} failed: {endpoint} answered{said}.", status=status)
    return None


def _token_sent(response) -> bool:
    try:
        return "authorization" in response.request.headers
    except (AttributeError, RuntimeError):  # no request attached to the response
        return True


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning the request got no (complete) answer: refused, timed out, dropped."""
    try:
        import httpx2 as http  # the HTTP client of huggingface_hub 2.x
    except ImportError:
        import httpx as http  # huggingface_hub 1.x
    return (http.TransportError, ConnectionError, TimeoutError)


def _transport_error(cause: BaseException, repo_id: str, endpoint: str, action: str) -> HubError:
    name, text = type(cause).__name__, str(cause) or type(cause).__name__
    if "Timeout" in name or isinstance(cause, TimeoutError):
        return HubError(f"timed out talking to {endpoint} ({text}) while trying to {action} {repo_id}: check your "
                        "network, or raise HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT.", retryable=True)
    if "Connect" in name or isinstance(cause, ConnectionRefusedError):
        return HubError(f"cannot reach the Hub at {endpoint} ({text}): check HF_ENDPOINT, your network and that "
                        "the server is up.", retryable=True)
    if action == "push":
        return HubError(f"the connection to {endpoint} dropped during the upload to {repo_id} ({text}). The Hub "
                        "applies a commit whole or not at all: run the push again.", retryable=True)
    return HubError(f"the connection to {endpoint} dropped during the download of {repo_id} ({text}); the partial "
                    "download was discarded: run the pull again.", retryable=True)
