"""Quality on real data: the offline pretrained MiniLM (BERT) and a slice of real SST-2.

A dense teacher is fine-tuned on 1,600 training sentences; Faster-VTrans then removes 30% of the
transformer-layer parameters. Accuracy is measured on the 872 test sentences (= GLUE validation).
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

import hf_compress  # noqa: F401
from hf_compress.data import load_sst2, minilm_path, tokenize
from hf_compress.evaluation import accuracy, count_parameters
from trainers import VTransTrainer, VTransTrainingArguments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sst2_teacher(tmp_path_factory):
    try:
        path = minilm_path()
        train_raw = load_sst2("train")
    except FileNotFoundError as err:  # pragma: no cover - the CI installs both
        pytest.fail(f"real model / data missing: {err}")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    collator = DataCollatorWithPadding(tokenizer)
    train = tokenize(train_raw.shuffle(seed=0).select(range(1600)), tokenizer, max_length=48)
    test = tokenize(load_sst2("test"), tokenizer, max_length=48)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    out = tmp_path_factory.mktemp("teacher")
    Trainer(
        model=teacher,
        args=TrainingArguments(str(out), per_device_train_batch_size=32, learning_rate=1e-4, num_train_epochs=1,
                               warmup_steps=5, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0),
        train_dataset=train, data_collator=collator,
    ).train()
    teacher.save_pretrained(out)
    return teacher, str(out), tokenizer, collator, train, test


def test_teacher_learns_sst2(sst2_teacher):
    teacher, _, _, collator, _, test = sst2_teacher
    assert accuracy(teacher, test, collator) > 0.75  # chance is ~0.51


def test_faster_vtrans_keeps_accuracy_at_30_percent(sst2_teacher, tmp_path):
    teacher, teacher_dir, tokenizer, collator, train, test = sst2_teacher
    dense_acc = accuracy(teacher, test, collator)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    args = VTransTrainingArguments(
        output_dir=str(tmp_path / "pruned"), target_sparsity=0.3, variant="faster", data_fraction=0.4,
        num_train_epochs=2, finetune_epochs=1, per_device_train_batch_size=32, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, logging_steps=5,
    )
    trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train,
                            data_collator=collator, processing_class=tokenizer)
    trainer.train()
    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    report = pruned.config.pruning_report
    pruned_acc = accuracy(pruned, test, collator)
    print(f"dense {dense_acc:.4f} pruned {pruned_acc:.4f} layer sparsity {report['layer_sparsity']:.3f}")
    assert report["layer_sparsity"] >= 0.3
    assert count_parameters(pruned) < count_parameters(teacher)
    assert report["flops_pruned"] < report["flops_dense"]
    assert pruned_acc >= dense_acc - 0.05
    assert os.path.isfile(tmp_path / "pruned" / "tokenizer.json")


def test_cli_main_job_end_to_end(tmp_path, capsys):
    """The README's main job on a small slice: teacher fine-tune, Faster-VTrans, summary, card, reload."""
    import json

    from hf_compress.cli import main

    out = tmp_path / "job"
    code = main([
        "vtrans", "--output_dir", str(out), "--train_limit", "480", "--teacher_train_limit", "480",
        "--data_fraction", "0.5", "--num_train_epochs", "1", "--finetune_epochs", "0.5", "--max_length", "32",
        "--latency_batch_size", "8", "--use_cpu", "true", "--disable_tqdm", "true",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy      dense" in printed and "latency" in printed
    summary = json.loads((out / "vtrans_summary.json").read_text())
    assert summary["layer_sparsity"] >= 0.5 and summary["pruned_params"] < summary["dense_params"]
    assert 0.0 <= summary["pruned_accuracy"] <= 1.0
    card = (out / "README.md").read_text()
    assert "VTrans" in card and f"{summary['pruned_params']:,}" in card
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert count_parameters(reloaded) == summary["pruned_params"]
