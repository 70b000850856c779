"""Run by tests/test_ddp.py under `accelerate launch` with 2 CPU processes: a short constrained DCA-NAS search
on digits; every rank reports alpha, lambda and the genotype it ends with (DDP must keep them identical)."""

import json
import os
import sys

import torch

import hf_compress  # noqa: F401
from hf_compress.nas.search import load_digits_dataset
from trainers import DCANASTrainer, DCANASTrainingArguments

out = sys.argv[1]
args = DCANASTrainingArguments(
    output_dir=out, search_space="nb201", search_init_channels=8, search_cells_per_stage=1, image_size=16,
    final_image_size=32, budget_ratio=0.3, max_steps=6, per_device_train_batch_size=16, learning_rate=0.05,
    optim="sgd", optim_args="momentum=0.9", lr_scheduler_type="constant", logging_steps=2, save_strategy="no",
    report_to="none", disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False, seed=0,
    arch_learning_rate=0.05, arch_warmup_ratio=0.0, channel_bottleneck=2,
)
trainer = DCANASTrainer(args=args, train_dataset=load_digits_dataset(image_size=16, limit=256, seed=0))
trainer.train()
supernet = trainer.supernet
summary = {
    "world_size": trainer.args.world_size,
    "rank": trainer.args.process_index,
    "global_steps": trainer.state.global_step,
    "alpha": supernet.alphas["normal"].detach().flatten().tolist(),
    "alpha_moved": float((supernet.alphas["normal"].detach()).abs().max()),
    "lambda": float(supernet.constraint.lambda_.detach()),
    "classifier_sum": float(supernet.classifier.weight.detach().double().sum()),
    "genotype": str(supernet.genotype()),
}
trainer.save_model(out)
with open(os.path.join(out, f"rank{trainer.args.process_index}.json"), "w") as handle:
    json.dump(summary, handle)
# leave the process group together: a worker exiting while another still saves can abort (SIGABRT) in gloo
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
