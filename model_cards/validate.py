"""Offline model-card validation.

``ModelCard.validate()`` posts the card to the Hub's ``/api/validate-yaml``, so it needs a network. This
checks what can be checked locally, with messages that name the problem and the fix: the metadata parses,
required keys are present, ``model-index`` parses to ``EvalResult`` objects with a numeric value for every
metric and round-trips unchanged, no template placeholder is left, and every local file the card links
(plots, the probing report) exists next to it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

REQUIRED_METADATA = ("library_name", "tags", "pipeline_tag")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class CardValidationError(ValueError):
    """A model card the Hub would reject or show broken (bad metadata, metric, or missing linked file)."""


def _metric_problems(model_index) -> list[str]:
    """Check every ``model-index`` entry by hand first, so a bad metric is named instead of a KeyError."""
    if not isinstance(model_index, list) or not model_index:
        return ["'model-index' must be a non-empty list of {name, results}"]
    problems = []
    for entry in model_index:
        if not isinstance(entry, dict) or not entry.get("name"):
            problems.append("a 'model-index' entry has no 'name' (the model name shown on leaderboards)")
            continue
        for i, result in enumerate(entry.get("results") or []):
            where = f"model-index result {i}"
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not task.get("type"):
                problems.append(f"{where}: task.type is missing (e.g. 'text-classification')")
            for key in ("type", "name"):
                if not dataset.get(key):
                    problems.append(f"{where}: dataset.{key} is missing")
            where = f"{where} (dataset {dataset.get('name') or dataset.get('type')!r})"
            for metric in result.get("metrics") or [{}]:
                name = metric.get("name") or metric.get("type") or "?"
                if not metric.get("type"):
                    problems.append(f"{where}: metric {name!r} has no 'type'")
                value = metric.get("value")
                if value is None:
                    problems.append(f"{where}: metric {name!r} has no value")
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    problems.append(f"{where}: metric {name!r} has value {value!r}, not a finite number")
        if not entry.get("results"):
            problems.append(f"model-index entry {entry['name']!r} has no results")
    return problems


def eval_result_problems(results: list[EvalResult] | None) -> list[str]:
    """Problems of ``EvalResult`` objects before they are serialised (a None value would silently vanish)."""
    problems = []
    for result in results or []:
        value, name = result.metric_value, result.metric_name or result.metric_type
        where = f"EvalResult {name!r} on {result.dataset_name!r}"
        if value is None:
            problems.append(f"{where} has no metric value; pass the number the run measured")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{where} has value {value!r}, not a finite number")
    return problems


def _linked_files(text: str) -> list[tuple[str, bool]]:
    """(relative path, is_image) of every local file the Markdown body links."""
    out = []
    for bang, target in _LINK.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            continue  # URLs, anchors and absolute paths are not files shipped with the card
        out.append((target.split("#")[0], bool(bang)))
    return out


def validate_card(card: ModelCard | str | os.PathLike, folder: str | os.PathLike | None = None) -> list[EvalResult]:
    """Validate a model card offline; returns its parsed ``EvalResult`` list, raises ``CardValidationError``.

    ``card`` is a ``ModelCard`` or the path of a saved ``README.md`` (then ``folder`` defaults to its
    directory). ``folder`` is where the card is saved: local links are resolved against it.
    """
    if isinstance(card, (str, os.PathLike)):
        if not Path(card).is_file():
            raise FileNotFoundError(f"No model card at {card}: pass a ModelCard or the path of a saved README.md.")
        folder = Path(card).parent if folder is None else folder
        content = Path(card).read_text(encoding="utf-8")
    elif isinstance(card, ModelCard):
        problems = eval_result_problems(card.data.eval_results)
        if problems:
            raise CardValidationError("Model card is invalid:\n  - " + "\n  - ".join(problems))
        content = str(card)
    else:
        raise TypeError(f"validate_card needs a ModelCard or the path of a saved card, got {card!r}.")
    problems: list[str] = []

    match = REGEX_YAML_BLOCK.search(content)
    if not match:
        raise CardValidationError("The card has no YAML metadata block ('---' ... '---' at the top); render it with "
                                  "model_cards.render_vtrans_card or add ModelCardData.")
    try:
        raw = yaml.safe_load(match.group(2)) or {}
    except yaml.YAMLError as err:
        raise CardValidationError(f"The card's YAML metadata does not parse: {err}") from err
    if not isinstance(raw, dict):
        raise CardValidationError("The card's YAML metadata must be a mapping (key: value lines).")
    body = content[match.end():]

    for key in REQUIRED_METADATA:
        if not raw.get(key):
            problems.append(f"metadata {key!r} is missing")
    if "hf-compress" not in (raw.get("tags") or []):
        problems.append("tag 'hf-compress' is missing (the Hub lists compressed models by it)")
    base = raw.get("base_model")
    for name in [base] if isinstance(base, str) else base or []:
        if not isinstance(name, str) or not _HUB_ID.match(name):
            problems.append(f"base_model {name!r} is not a Hub model id ('owner/name'); leave it out for local models")

    results: list[EvalResult] = []
    if "model-index" in raw:
        metric_problems = _metric_problems(raw["model-index"])
        problems += metric_problems
        if not metric_problems:
            try:
                model_name, results = model_index_to_eval_results(raw["model-index"])
                parsed = ModelCard(content)  # what ModelCard.load / the Hub client builds from the same text
            except (KeyError, TypeError, ValueError) as err:
                problems.append(f"'model-index' does not parse to EvalResults: {err}")
            else:
                if eval_results_to_model_index(model_name, results) != raw["model-index"]:
                    problems.append("'model-index' does not round-trip through EvalResult (unknown or misplaced keys)")
                if parsed.data.eval_results != results:
                    problems.append("ModelCardData parses 'model-index' differently from model_index_to_eval_results")
    elif re.search(r"^## Evaluation", body, re.M) and "Not evaluated" not in body:
        problems.append("the card reports an evaluation but has no 'model-index' metadata; pass eval_results")

    leftover = _PLACEHOLDER.findall(re.sub(r"```.*?```", "", body, flags=re.S))
    if leftover:
        problems.append(f"template placeholders were not filled: {sorted(set(leftover))}")

    links = _linked_files(body)
    if links and folder is None:
        problems.append(f"the card links local files {[p for p, _ in links]} but no folder was given to check them: "
                        "pass folder= (the directory the card is saved in)")
    for path, is_image in links if folder is not None else []:
        target = Path(folder) / path
        if not target.is_file():
            problems.append(f"linked file {path!r} does not exist in {folder}; write it there or drop the link")
        elif is_image:
            head = target.read_bytes()[:8]
            if not any(head.startswith(magic) for magic in _IMAGE_MAGIC):
                problems.append(f"linked image {path!r} is not a PNG or JPEG file")

    if problems:
        raise CardValidationError("Model card is invalid:\n  - " + "\n  - ".join(problems))
    return results
