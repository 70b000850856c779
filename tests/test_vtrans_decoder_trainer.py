"""VTransTrainer on tiny causal LMs: every variant runs, the budget is met, the result reloads and generates."""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import hf_compress  # noqa: F401
from hf_compress.vtrans import PrunedDecoderForCausalLM
from trainers import VTransTrainer, VTransTrainingArguments

from test_vtrans_decoders import VOCAB, tiny_decoder


def lm_dataset(n: int = 32, length: int = 16) -> Dataset:
    """Repetitive token streams (a pattern a tiny model can pick up); labels = input_ids."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        start = int(torch.randint(3, VOCAB - 8, (1,), generator=g))
        ids = [start + (j % 8) for j in range(length)]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": ids})
    return Dataset.from_list(rows)


def args_for(tmp_path, **overrides) -> VTransTrainingArguments:
    base = dict(
        output_dir=str(tmp_path / "out"), target_sparsity=0.4, per_device_train_batch_size=8, num_train_epochs=2,
        learning_rate=1e-3, logging_steps=2, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        finetune_epochs=1, disable_tqdm=True,
    )
    base.update(overrides)
    return VTransTrainingArguments(**base)


@pytest.mark.parametrize("kind,variant", [("llama", "faster"), ("qwen2", "vtrans"), ("gpt2", "fast")])
def test_decoder_variants_meet_budget_and_reload(kind, variant, tmp_path):
    teacher = tiny_decoder(kind)
    student = tiny_decoder(kind)
    student.load_state_dict(teacher.state_dict())
    data = lm_dataset()
    args = args_for(tmp_path, variant=variant, data_fraction=1.0 if variant != "vtrans" else None)
    trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    pruned = trainer.materialize()
    report = pruned.config.pruning_report
    assert report["layer_sparsity"] >= 0.4 - 1e-9
    assert report["budget"]["realised"] <= report["budget"]["target"]
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"loss_kl", "loss_lagrangian", "loss_distill_logits", "expected_size_ratio", "lambda_1"} <= logged
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert isinstance(loaded, PrunedDecoderForCausalLM)
    prompt = torch.tensor([[5, 6, 7, 8]])
    out = loaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def test_faster_uniform_llama_is_a_native_model(tmp_path):
    teacher = tiny_decoder("llama")
    student = tiny_decoder("llama")
    args = args_for(tmp_path, variant="faster", uniform=True, data_fraction=1.0)
    trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=lm_dataset())
    frozen = [n for n, p in student.named_parameters() if p.requires_grad and not n.startswith("vtrans_gates.")]
    assert frozen == []  # Faster-VTrans trains only the gates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert type(trainer.materialize()) is LlamaForCausalLM
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "out")) is LlamaForCausalLM


def test_hidden_distillation_of_decoders_is_scale_free(tmp_path):
    """Pre-norm residual streams are large: the decoder hidden term is MSE relative to the teacher's mean
    square, so scaling both streams by 100 leaves it unchanged (encoders keep the plain MSE)."""
    from types import SimpleNamespace

    from trainers.vtrans_trainer import DistillationMixin

    mixin = DistillationMixin()
    mixin.args = args_for(tmp_path, distill_logits_weight=0.0, distill_hidden_weight=1.0)
    g = torch.Generator().manual_seed(0)
    teacher_states = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    student_states = [t + 0.1 * torch.randn(2, 5, 8, generator=g) for t in teacher_states]

    def term(scale: float, relative: bool) -> float:
        mixin._relative_hidden_mse = relative
        student = SimpleNamespace(logits=None, hidden_states=[s * scale for s in student_states])
        teacher = SimpleNamespace(logits=None, hidden_states=[t * scale for t in teacher_states])
        return float(mixin.distillation_terms(student, teacher, None, None, [0, 1])["distill_hidden"])

    assert term(100.0, True) == pytest.approx(term(1.0, True), rel=1e-4)
    assert term(100.0, False) == pytest.approx(1e4 * term(1.0, False), rel=1e-4)


def test_closest_student_layers_matches_pairwise_distances():
    """The Gram-matrix layer mapping picks, for every teacher layer, the student layer a direct pairwise masked
    MSE picks, also when the flattened states span several chunks and padding tokens differ wildly."""
    from trainers.vtrans_trainer import closest_student_layers

    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(3, 7, 16, generator=g) * (1 + 50 * (i == 2)) for i in range(6)]
    student = [teacher[(i * 5) % 6] + 0.3 * torch.randn(3, 7, 16, generator=g) for i in range(4)]
    mask = torch.ones(3, 7, 1)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    for i, s in enumerate(student):  # padding positions far away: they must not count
        s[mask.expand_as(s) == 0] = 1e3 * (i + 1)
    direct = torch.tensor([
        min(range(len(student)), key=lambda i: float((((student[i] - t) ** 2) * mask).sum())) for t in teacher
    ])
    for chunk in (1 << 20, 50):  # one chunk, and many
        assert closest_student_layers(student, teacher, mask, chunk=chunk).tolist() == direct.tolist()
