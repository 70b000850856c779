"""Run by tests/test_ddp.py under `accelerate launch` with 2 CPU processes: VTrans on a tiny BERT
(``bert``) or Faster-VTrans on a tiny GQA LLaMA causal LM (``llama``)."""

import json
import sys

import datasets
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

import hf_compress  # noqa: F401
from hf_compress.vtrans import get_gates
from trainers import VTransTrainer, VTransTrainingArguments

out = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "bert"
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
ids = torch.randint(2, 100, (64, 8), generator=g)
if kind == "bert":
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2)
    model_class, labels, variant = BertForSequenceClassification, (ids[:, 1] >= 50).long().tolist(), "vtrans"
else:
    config = LlamaConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                         intermediate_size=64)
    model_class, labels, variant = LlamaForCausalLM, ids.tolist(), "faster"
teacher = model_class(config)
student = model_class(config)
student.load_state_dict(teacher.state_dict())
train = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 64, "labels": labels})
args = VTransTrainingArguments(
    out, target_sparsity=0.5, per_device_train_batch_size=8, max_steps=4, finetune_epochs=1, logging_steps=1,
    save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, variant=variant,
    data_fraction=1.0,
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
# leave the process group together: a worker exiting while another still saves can abort (SIGABRT) in gloo
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
