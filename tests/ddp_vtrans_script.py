"""Run by tests/test_ddp.py under `accelerate launch --num_processes 2 --cpu`: VTrans on a tiny BERT."""

import json
import sys

import datasets
import torch
from transformers import BertConfig, BertForSequenceClassification

import hf_compress  # noqa: F401
from hf_compress.vtrans import get_gates
from trainers import VTransTrainer, VTransTrainingArguments

out = sys.argv[1]
torch.manual_seed(0)
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2)
teacher = BertForSequenceClassification(config)
student = BertForSequenceClassification(config)
student.load_state_dict(teacher.state_dict())
g = torch.Generator().manual_seed(0)
ids = torch.randint(2, 100, (64, 8), generator=g)
train = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 64, "labels": (ids[:, 1] >= 50).long().tolist()})
args = VTransTrainingArguments(
    out, target_sparsity=0.5, per_device_train_batch_size=8, max_steps=4, finetune_epochs=1, logging_steps=1,
    save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
)
trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train)
trainer.train()
gates = get_gates(trainer.accelerator.unwrap_model(trainer.model))
rank = trainer.args.process_index
summary = {
    "rank": rank,
    "world_size": trainer.args.world_size,
    "mu_sum": float(sum(g.mu.detach().sum() for g in gates.groups.values())),
    "lambda_1": float(gates.lambda_1.detach()),
    "heads": trainer.materialize().config.num_attention_heads_per_layer,
}
with open(f"{out}/rank{rank}.json", "w") as handle:
    json.dump(summary, handle)
