"""Reading and writing the JSON files of a search (results, latency tables, look-up graphs) in one way:
parent folders created on save; on load, a missing file, invalid JSON or a file of another kind is an error
that names the file and how to make the right one."""

from __future__ import annotations

import json
import os


def save_json(path: str | os.PathLike, data: dict) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    return path


def load_json(path: str | os.PathLike, what: str, hint: str, expected_format: str | None = None) -> dict:
    """``what``: the kind of file ("Latency table"); ``hint``: how to make one; ``expected_format``: the value
    its ``format`` field must have."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path} ({hint}).")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
    if expected_format is not None and data.get("format") != expected_format:
        raise ValueError(
            f"{path} is not a DCA-NAS {what[0].lower() + what[1:]} (format {data.get('format')!r}, "
            f"expected {expected_format!r})."
        )
    return data
