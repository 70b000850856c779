"""The teacher output cache: exact per-example reuse across batches and phases, and its memory limit."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from trainers import VTransTrainer
from trainers.teacher_cache import TeacherOutputCache

from test_vtrans_trainer import copy_of, make_args, tiny_bert, toy_dataset


def padded_batch(rows: list[list[int]], length: int, types: bool = True) -> dict:
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def teacher_out(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True)


def test_cached_rows_match_the_teacher_under_any_padding_and_batch_order():
    teacher = tiny_bert().eval()
    rows = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16], [17, 18, 19]]
    cache = TeacherOutputCache(max_bytes=2**20)
    first = padded_batch(rows[:2], 6)
    assert cache.lookup(first) is None
    cache.store(first, teacher_out(teacher, first))
    second = padded_batch(rows[2:], 8)
    cache.store(second, teacher_out(teacher, second))
    # the same examples, shuffled into a new batch with a different padded length
    mixed = padded_batch([rows[3], rows[0], rows[2]], 11)
    hit = cache.lookup(mixed)
    assert hit is not None and cache.hits == 1
    fresh = teacher_out(teacher, mixed)
    torch.testing.assert_close(hit.logits, fresh.logits, rtol=1e-5, atol=1e-5)
    real = mixed["attention_mask"].bool()
    for cached_layer, fresh_layer in zip(hit.hidden_states[1:], fresh.hidden_states[1:]):
        torch.testing.assert_close(cached_layer[real], fresh_layer[real], rtol=1e-5, atol=1e-5)
        assert torch.all(cached_layer[~real] == 0)  # padding is masked by every distillation term
    assert len(hit.hidden_states) == len(fresh.hidden_states)
    # one unseen row makes the whole batch a miss
    assert cache.lookup(padded_batch([rows[0], [20, 21]], 4)) is None and cache.misses == 2


def test_a_partly_cached_batch_runs_the_teacher_on_its_new_rows_only():
    teacher = tiny_bert().eval()
    rows = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16], [17, 18, 19]]
    cache = TeacherOutputCache(max_bytes=2**20)
    seen = []

    def compute(batch):
        seen.append(batch["input_ids"].shape[0])
        return teacher_out(teacher, batch)

    cache.fetch(padded_batch(rows[:2], 6), compute)
    assert seen == [2] and cache.misses == 1 and cache.partial == 0
    mixed = padded_batch([rows[2], rows[0], rows[3], rows[1]], 7)  # two cached rows, two new ones
    got = cache.fetch(mixed, compute)
    assert seen == [2, 2] and cache.misses == 2 and cache.partial == 1 and len(cache.entries) == 4
    fresh = teacher_out(teacher, mixed)
    real = mixed["attention_mask"].bool()
    torch.testing.assert_close(got.logits, fresh.logits, rtol=1e-5, atol=1e-5)
    for cached_layer, fresh_layer in zip(got.hidden_states[1:], fresh.hidden_states[1:]):
        torch.testing.assert_close(cached_layer[real], fresh_layer[real], rtol=1e-5, atol=1e-5)
    cache.fetch(padded_batch(rows[::-1], 6), compute)
    assert seen == [2, 2] and cache.hits == 1
    # [1, T] position ids are shared by every row, so they go to the teacher whole with the selected rows
    positions = {"position_ids": torch.arange(4).unsqueeze(0)}  # explicit positions: other keys than above
    cache.fetch({**padded_batch([rows[0]], 4), **positions}, compute)
    shifted = {**padded_batch([rows[0], [20, 21]], 4), **positions}
    got = cache.fetch(shifted, compute)
    assert seen[-2:] == [1, 1] and cache.partial == 2  # rows[0] is cached with these positions: one new row
    torch.testing.assert_close(got.logits, teacher_out(teacher, shifted).logits, rtol=1e-5, atol=1e-5)


def test_new_rows_that_do_not_fit_switch_the_cache_off_and_the_whole_batch_goes_to_the_teacher():
    teacher = tiny_bert().eval()
    one_row = 4 * (2 + 3 * 3 * 32)  # 2 logits + 3 layers x 3 tokens x 32 dims, float32
    cache = TeacherOutputCache(max_bytes=one_row + 100)
    cache.fetch(padded_batch([[5, 6, 7]], 3), lambda batch: teacher_out(teacher, batch))
    seen = []

    def compute(batch):
        seen.append(batch["input_ids"].shape[0])
        return teacher_out(teacher, batch)

    mixed = padded_batch([[5, 6, 7], [8, 9, 10]], 3)
    got = cache.fetch(mixed, compute)
    assert seen == [1, 2] and not cache.enabled
    torch.testing.assert_close(got.logits, teacher_out(teacher, mixed).logits)


def test_per_token_logits_of_decoders_are_cached_at_real_positions():
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32)).eval()
    rows = [[3, 4, 5], [6, 7, 8, 9, 10]]
    cache = TeacherOutputCache(max_bytes=2**20)
    batch = padded_batch(rows, 5, types=False)
    cache.store(batch, teacher_out(teacher, batch))
    again = padded_batch(rows[::-1], 7, types=False)
    hit = cache.lookup(again)
    real = again["attention_mask"].bool()
    torch.testing.assert_close(hit.logits[real], teacher_out(teacher, again).logits[real], rtol=1e-5, atol=1e-5)
    assert hit.logits.shape == (2, 7, 50)


def test_left_padding_and_unkeyable_inputs_are_not_confused():
    teacher = tiny_bert().eval()
    cache = TeacherOutputCache(max_bytes=2**20)
    right = padded_batch([[5, 6]], 4)
    cache.store(right, teacher_out(teacher, right))
    left = {k: v.flip(-1) for k, v in padded_batch([[6, 5]], 4).items()}  # tokens 5, 6 at positions 2, 3
    assert cache.lookup(left) is None  # same tokens, other positions: another key
    shifted = {**right, "position_ids": torch.arange(3, 7).unsqueeze(0)}  # [1, T] positions, broadcast: another key
    assert cache.lookup(shifted) is None
    cache.store(shifted, teacher_out(teacher, shifted))
    torch.testing.assert_close(cache.lookup(shifted).logits, teacher_out(teacher, shifted).logits)
    assert len(cache.entries) == 2
    embeds = {"inputs_embeds": torch.randn(1, 4, 32), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert cache.lookup(embeds) is None
    cache.store(embeds, teacher_out(teacher, embeds))
    assert len(cache.entries) == 2  # not stored


def test_cache_switches_itself_off_over_its_memory_limit():
    teacher = tiny_bert().eval()
    first, second = padded_batch([[5, 6, 7], [5, 6, 7]], 3), padded_batch([[8, 9], [10, 11, 12]], 4)
    # one row: 2 logits + 3 layers x 3 tokens x 32 dims, float32; a repeated row is stored once
    one_row = 4 * (2 + 3 * 3 * 32)
    cache = TeacherOutputCache(max_bytes=one_row + 100)
    cache.store(first, teacher_out(teacher, first))
    assert cache.enabled and len(cache.entries) == 1 and cache.bytes == one_row
    cache.store(second, teacher_out(teacher, second))  # would add 5 tokens' worth: over the limit, nothing copied
    assert not cache.enabled and cache.entries == {} and cache.bytes == 0
    assert cache.lookup(first) is None
    # told how many examples are coming, the first batch decides: 2 of these rows would not fit, so nothing is kept
    cache = TeacherOutputCache(max_bytes=one_row + 100, expected_examples=2)
    cache.store(first, teacher_out(teacher, first))
    assert not cache.enabled and cache.entries == {}
    cache = TeacherOutputCache(max_bytes=2 * one_row + 100, expected_examples=2)
    cache.store(first, teacher_out(teacher, first))
    assert cache.enabled and len(cache.entries) == 1


class CountingTeacher(BertForSequenceClassification):
    calls = 0

    def forward(self, *args, **kwargs):
        type(self).calls += 1
        return super().forward(*args, **kwargs)


def test_faster_vtrans_runs_the_teacher_once_per_example_with_the_same_result(tmp_path):
    """Faster-VTrans, 3 gate epochs + 2 fine-tune epochs over 32 examples (2 batches an epoch): with the cache the
    teacher runs on the first epoch's 2 batches only, and the pruned model comes out as without it."""
    base = tiny_bert()
    states, calls = {}, {}
    for cache_mb in (0.0, 64.0):
        teacher = CountingTeacher(base.config)
        teacher.load_state_dict(base.state_dict())
        CountingTeacher.calls = 0
        args = make_args(tmp_path / str(cache_mb), variant="faster", num_train_epochs=3, finetune_epochs=2,
                         teacher_cache_mb=cache_mb)
        trainer = VTransTrainer(model=copy_of(base), teacher_model=teacher, args=args, train_dataset=toy_dataset(32))
        trainer.train()
        calls[cache_mb] = CountingTeacher.calls
        states[cache_mb] = {k: v.detach().clone() for k, v in trainer.materialize().state_dict().items()}
        if cache_mb:
            assert trainer.teacher_cache.expected_examples == 32
            assert trainer.teacher_cache_stats["teacher_cache_examples"] == 32
            assert trainer.teacher_cache_stats["teacher_cache_batch_hits"] == 2 * (3 + 2) - 2
        else:
            assert trainer.teacher_cache is None
    assert calls == {0.0: 2 * (3 + 2), 64.0: 2}
    off, on = states[0.0], states[64.0]
    assert off.keys() == on.keys()
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=1e-4, atol=1e-5)


def test_teacher_cache_mb_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="teacher_cache_mb"):
        make_args(tmp_path, teacher_cache_mb=-1)
