"""Teacher outputs kept per example across epochs.

The distillation teacher is frozen and in eval mode, so an example's logits and hidden states never change.
Faster-VTrans runs many epochs over a small slice (6 gate epochs on 2.5% of SST-2, then a fine-tune on 12%),
and every step used to run the teacher again: a third of a gate step's compute (student forward, input-gradient
backward, teacher forward). With this cache each example meets the teacher once for the whole run, pruning
and fine-tuning phases together.

Examples are keyed by their real tokens (ids, token types and positions of the unmasked entries), so the key
does not depend on the batch's padding length or on which batch an example lands in. Only real-token
positions are kept; padding positions come back as zeros, which every distillation term masks out. When the
cache would outgrow its memory limit it is emptied and switched off for the rest of the run: with shuffled
batches a partial cache almost never serves a whole batch, so it would hold memory for nothing. A batch that mixes
cached and new examples (a fine-tune slice larger than the pruning slice) runs the teacher on its new rows only.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

# inputs the key covers; a batch with any other tensor input (inputs_embeds, pixel values...) is not cached
KEYED_INPUTS = ("input_ids", "token_type_ids", "position_ids")
IGNORED_INPUTS = ("attention_mask", "labels", "use_cache")


class TeacherOutputCache:
    """Per-example teacher logits and (optionally) layer hidden states, up to ``max_bytes``."""

    def __init__(self, max_bytes: int, keep_hidden: bool = True, expected_examples: int | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.keep_hidden = keep_hidden
        # with the number of distinct examples known, the first batch tells whether they can all fit: if not, the
        # cache is off from the start instead of filling up (time and memory) and then being dropped
        self.expected_examples = expected_examples
        self.enabled = self.max_bytes > 0
        self.entries: dict[bytes, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.bytes = 0
        self.hits = 0  # batches served from the cache
        self.misses = 0  # batches the teacher ran on
        self.partial = 0  # of those, batches where it ran on the uncached rows only

    # -- keys -----------------------------------------------------------------------------------------
    def _keys(self, inputs: dict) -> tuple[list[bytes], torch.Tensor] | None:
        """One key per row and the [B, T] real-token mask, or None when the batch cannot be keyed."""
        if any(torch.is_tensor(v) and k not in KEYED_INPUTS + IGNORED_INPUTS for k, v in inputs.items()):
            return None
        input_ids = inputs.get("input_ids")
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
            return None
        mask = inputs.get("attention_mask")
        if mask is not None and mask.shape != input_ids.shape:  # e.g. a 4D custom mask: not keyed
            return None
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
        parts = [inputs[k] for k in KEYED_INPUTS if torch.is_tensor(inputs.get(k))]
        # position_ids may come as [1, T]: broadcast to the batch
        stacked = torch.stack([p.to(torch.int64).expand_as(input_ids) for p in parts], dim=-1).cpu()  # [B, T, P]
        mask_cpu = mask.cpu()
        keys = []
        for row, row_mask in zip(stacked, mask_cpu):
            positions = row_mask.nonzero().squeeze(-1)
            # where the real tokens sit matters (left padding shifts absolute positions), so it is in the key
            keys.append(positions.numpy().tobytes() + b"|" + row[positions].numpy().tobytes())
        return keys, mask

    # -- lookup / store ---------------------------------------------------------------------------------
    def fetch(self, inputs: dict, compute):
        """The batch's teacher output: cached rows from the cache, the others from ``compute(rows_inputs)``.

        When only some rows are new (a fine-tune slice larger than the pruning slice mixes cached and new examples
        in nearly every batch), the teacher runs on the new rows alone and the batch is assembled from the cache.
        """
        keyed = self._keys(inputs) if self.enabled else None
        if keyed is None:
            return compute(inputs)
        keys, mask = keyed
        missing = [b for b, key in enumerate(keys) if key not in self.entries]
        if not missing:
            self.hits += 1
            return self._assemble([self.entries[k] for k in keys], mask)
        self.misses += 1
        rows_inputs = None if len(missing) == len(keys) else self._select_rows(inputs, missing, len(keys))
        if rows_inputs is None:
            outputs = compute(inputs)
            self._store(keys, mask, outputs)
            return outputs
        self.partial += 1
        outputs = compute(rows_inputs)
        self._store([keys[b] for b in missing], mask[missing], outputs)
        if not self.enabled:  # the new rows did not fit: switched off, so the whole batch goes to the teacher
            return compute(inputs)
        return self._assemble([self.entries[k] for k in keys], mask)

    @staticmethod
    def _select_rows(inputs: dict, rows: list[int], batch_size: int) -> dict | None:
        """The inputs of some rows of the batch (batch-broadcast tensors such as [1, T] positions kept whole)."""
        index = torch.tensor(rows)
        selected = {}
        for name, value in inputs.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch_size:
                selected[name] = value.index_select(0, index.to(value.device))
            elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] != 1:
                return None  # a tensor whose first axis is not the batch: run the whole batch
            else:
                selected[name] = value
        return selected

    def lookup(self, inputs: dict):
        """The batch's teacher output rebuilt from the cache, or None when any row is missing."""
        keyed = self._keys(inputs) if self.enabled else None
        return None if keyed is None else self._lookup(*keyed)

    def store(self, inputs: dict, outputs) -> None:
        keyed = self._keys(inputs) if self.enabled else None
        if keyed is not None:
            self._store(*keyed, outputs)

    def _lookup(self, keys: list[bytes], mask: torch.Tensor):
        rows = [self.entries.get(k) for k in keys]
        if any(r is None for r in rows):
            self.misses += 1
            return None
        self.hits += 1
        return self._assemble(rows, mask)

    def _store(self, keys: list[bytes], mask: torch.Tensor, outputs) -> None:
        if not self.enabled:  # a lookup's keys, but switched off since
            return
        new_rows, seen = [], set()  # rows not cached yet, each key once (a batch may repeat a sentence)
        for b, key in enumerate(keys):
            if key not in self.entries and key not in seen:
                seen.add(key)
                new_rows.append(b)
        if not new_rows:
            return
        logits = outputs.logits
        per_token = logits.dim() == 3
        layers = None
        if self.keep_hidden and getattr(outputs, "hidden_states", None) is not None:
            layers = outputs.hidden_states[1:]  # the embedding output (index 0) is not used by distillation
        # what the new rows would add, checked before copying anything: rows that cannot fit (a big LM's per-token
        # logits) switch the cache off without a transient copy on the device
        tokens = int(mask[new_rows].sum())
        added = logits.element_size() * (tokens * logits.shape[-1] if per_token else len(new_rows) * logits.shape[-1])
        if layers is not None:
            added += layers[0].element_size() * len(layers) * tokens * layers[0].shape[-1]
        if self.bytes + added > self.max_bytes:
            self._switch_off(len(self.entries) + len(new_rows), self.bytes + added)
            return
        if not self.entries and self.expected_examples and added / len(new_rows) * self.expected_examples > self.max_bytes:
            self._switch_off(self.expected_examples, int(added / len(new_rows) * self.expected_examples))
            return
        for b in new_rows:
            row_mask = mask[b]
            row_logits = (logits[b][row_mask] if per_token else logits[b]).detach().clone()
            row_hidden = None if layers is None else torch.stack([h[b][row_mask] for h in layers]).detach()
            self.entries[keys[b]] = (row_logits, row_hidden)
            self.bytes += row_logits.nbytes + (0 if row_hidden is None else row_hidden.nbytes)

    def _switch_off(self, examples: int, needed_bytes: int) -> None:
        logger.info(
            "Teacher output cache switched off: %d examples would take about %.0f MB, over its %.0f MB limit "
            "(raise teacher_cache_mb to keep them; the teacher now runs every step).",
            examples, needed_bytes / 2**20, self.max_bytes / 2**20,
        )
        self.clear()
        self.enabled = False

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _assemble(self, rows, mask: torch.Tensor):
        logits_rows = [r[0] for r in rows]
        B, T = mask.shape
        if logits_rows[0].dim() == 2:  # per-token logits, real positions only
            logits = logits_rows[0].new_zeros(B, T, logits_rows[0].shape[-1])
            logits[mask] = torch.cat(logits_rows)
        else:
            logits = torch.stack(logits_rows)
        hidden_states = None
        if rows[0][1] is not None:
            first = rows[0][1]
            hidden = first.new_zeros(first.shape[0], B, T, first.shape[-1])
            hidden[:, mask] = torch.cat([r[1] for r in rows], dim=1)
            hidden_states = (None, *hidden.unbind(0))  # index 0 (embeddings) is not kept
        return SimpleNamespace(logits=logits, hidden_states=hidden_states)

    def stats(self) -> dict[str, float | bool]:
        return {"teacher_cache_examples": len(self.entries), "teacher_cache_mb": round(self.bytes / 2**20, 1),
                "teacher_cache_batch_hits": self.hits, "teacher_cache_batch_misses": self.misses,
                "teacher_cache_batch_partial": self.partial,
                "teacher_cache_enabled": self.enabled}
