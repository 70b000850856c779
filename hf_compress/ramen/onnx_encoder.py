"""The RAMEN encoder through onnxruntime, for low-latency queries on CPU.

A one-text query is bound by per-operator overhead in eager PyTorch (MiniLM: about 11 ms on 2 CPU threads for
a title). The same graph exported with ``torch.onnx.export(dynamo=True)`` and run by onnxruntime returns the same
embedding (checked at export, max abs difference about 1e-7) in about a third of the time. Labels can stay
encoded by PyTorch: the vectors agree to float precision, so the index does not change.

    from hf_compress.ramen.onnx_encoder import OnnxRamenEncoder, export_encoder_onnx
    export_encoder_onnx(encoder, tokenizer, "run/encoder")          # writes run/encoder/onnx/encoder.onnx
    fast = OnnxRamenEncoder.from_pretrained("run/encoder")
    vectors = fast.encode(["graph neural networks"], tokenizer)     # same API as RamenEncoder.encode
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..evaluation import ort_session
from .configuration_ramen import RamenConfig
from .modeling_ramen import RamenEncoder, encode_in_length_order

logger = logging.getLogger(__name__)

ONNX_SUBFOLDER = "onnx"
ONNX_FILE = "encoder.onnx"
REPORT_FILE = "encoder_export.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CHECK_TEXTS = ("extreme classification with graph metadata", "a", "protein folding, citation graphs and topic models")


class _EmbeddingOnly(torch.nn.Module):
    """forward(input_ids, attention_mask[, token_type_ids]) -> pooled embedding, the graph that is exported."""

    def __init__(self, encoder: RamenEncoder, names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.encoder(**dict(zip(self.names, tensors))).pooler_output


def _input_names(encoder: RamenEncoder, tokenizer) -> tuple[str, ...]:
    probe = tokenizer(["a"], return_tensors="pt")
    return tuple(name for name in _INPUTS if name in probe and (name != "token_type_ids" or "token_type_ids" in encoder._backbone_inputs))


def export_encoder_onnx(
    encoder: RamenEncoder,
    tokenizer,
    save_directory: str | os.PathLike,
    opset: int = 18,
    max_abs_diff: float = 1e-4,
) -> Path:
    """Export ``encoder`` to ``<save_directory>/onnx/encoder.onnx`` with dynamic batch and sequence axes.

    The exported graph is run by onnxruntime on a few padded texts and compared with PyTorch; a larger gap than
    ``max_abs_diff`` raises (nothing is left behind). The figures go to ``onnx/encoder_export.json``.
    """
    if not isinstance(encoder, RamenEncoder):
        raise TypeError(f"export_encoder_onnx needs a RamenEncoder, got {type(encoder).__name__}.")
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError("torch.onnx.export(dynamo=True) needs onnxscript: pip install onnxscript") from error
    folder = Path(save_directory) / ONNX_SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    encoder.cpu()
    names = _input_names(encoder, tokenizer)
    example = tokenizer(list(_CHECK_TEXTS[:2]), padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch", max=65536)
    sequence = torch.export.Dim("sequence", min=2, max=max(4, encoder.config.max_seq_length * 16))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _EmbeddingOnly(encoder, names),
                tuple(example[name] for name in names),
                dynamo=True,
                input_names=list(names),
                output_names=["embedding"],
                dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),),  # one entry: the *tensors tuple
                opset_version=opset,
                verbose=False,
            )
            program.optimize()
            program.save(str(path))
        session = ort_session(path)
        check = tokenizer(list(_CHECK_TEXTS), padding=True, truncation=True, max_length=encoder.config.max_seq_length, return_tensors="pt")
        with torch.inference_mode():
            reference = encoder(**{name: check[name] for name in names}).pooler_output.numpy()
        got = session.run(None, {name: check[name].numpy().astype(np.int64) for name in names})[0]
        gap = float(np.abs(got - reference).max())
        if not gap <= max_abs_diff:
            raise RuntimeError(
                f"The exported encoder disagrees with PyTorch by {gap:.2e} (> {max_abs_diff:.0e}); it was not kept. "
                "Report the model type and the transformers / torch versions."
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        encoder.to(device)
        encoder.train(was_training)
    report = {"onnx_file": f"{ONNX_SUBFOLDER}/{ONNX_FILE}", "inputs": list(names), "opset": opset,
              "max_abs_diff_vs_pytorch": gap, "checked_texts": len(_CHECK_TEXTS), "torch": torch.__version__}
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    logger.info("Exported the encoder to %s (max abs diff vs PyTorch %.1e)", path, gap)
    return path


class OnnxRamenEncoder:
    """Drop-in for :meth:`RamenEncoder.encode` (and so for ``XCPredictor``'s encoder), backed by onnxruntime."""

    def __init__(self, onnx_path: str | os.PathLike, config: RamenConfig, num_threads: int | None = None) -> None:
        if not Path(onnx_path).is_file():
            raise FileNotFoundError(f"No ONNX encoder at {onnx_path}: export one with export_encoder_onnx(encoder, tokenizer, folder).")
        self.config = config
        self.onnx_path = Path(onnx_path)
        self.session = ort_session(onnx_path, num_threads)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.source_folder: Path | None = None  # the saved PyTorch encoder this graph came from, if known

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, num_threads: int | None = None, export_if_missing: bool = True, tokenizer=None
    ) -> "OnnxRamenEncoder":
        """Load ``<folder>/onnx/encoder.onnx``; with ``export_if_missing`` export it first from the saved encoder."""
        folder = Path(folder)
        path = folder / ONNX_SUBFOLDER / ONNX_FILE
        if not path.is_file():
            if not export_if_missing:
                raise FileNotFoundError(f"{path} does not exist: export it with export_encoder_onnx or pass export_if_missing=True.")
            from transformers import AutoTokenizer

            export_encoder_onnx(RamenEncoder.from_pretrained(folder), tokenizer or AutoTokenizer.from_pretrained(folder), folder)
        encoder = cls(path, RamenConfig.from_pretrained(folder), num_threads=num_threads)
        encoder.source_folder = folder
        return encoder

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Write the graph and config into ``save_directory``, with the PyTorch encoder it came from when known,
        so that a saved predictor folder still loads with ``RamenEncoder.from_pretrained`` too."""
        import shutil

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        if self.source_folder is not None and self.source_folder.resolve() != folder.resolve():
            shutil.copytree(self.source_folder, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("xc"))
        elif self.source_folder is None:
            logger.warning("This ONNX encoder was not loaded from a saved RamenEncoder folder: %s gets the ONNX graph "
                           "and config only, no PyTorch weights.", folder)
        target = folder / ONNX_SUBFOLDER / ONNX_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.resolve() != self.onnx_path.resolve():
            shutil.copyfile(self.onnx_path, target)
        self.config.save_pretrained(folder)

    def encode(
        self,
        texts: list[str],
        tokenizer,
        batch_size: int = 256,
        show_progress: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Embeddings [len(texts), dim] float32, in order; the same batching by length as the PyTorch encoder."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def embed(batch) -> np.ndarray:
            feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
            if feeds["input_ids"].shape[1] < 2:  # the graph's sequence axis starts at 2: pad one masked position
                feeds = {name: np.pad(v, ((0, 0), (0, 1)), constant_values=pad_id if name == "input_ids" else 0)
                         for name, v in feeds.items()}
            return self.session.run(None, feeds)[0]

        return encode_in_length_order(texts, tokenizer, embed, self.config.hidden_size, batch_size,
                                      max_length or self.config.max_seq_length, show_progress, return_tensors="np")
