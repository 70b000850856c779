"""Run by tests/test_ddp.py under `accelerate launch` with 2 CPU processes: RAMEN on a tiny random BERT with
cluster batches and a metadata graph; every rank reports what it saw and the parameters it ends with.
``python ddp_ramen_script.py OUT reweight`` also re-weights and prunes the graph at each refresh and reports a
hash of the pruned matrix each rank sampled from."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from transformers import BertTokenizerFast  # noqa: E402

import hf_compress  # noqa: F401,E402
from test_ramen_trainer import WORDS, synthetic_data, tiny_encoder  # noqa: E402
from trainers import RamenTrainer, RamenTrainingArguments  # noqa: E402

out = sys.argv[1]
reweight = len(sys.argv) > 2 and sys.argv[2] == "reweight"
tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(WORDS)}, do_lower_case=False)
args = RamenTrainingArguments(
    out, per_device_train_batch_size=8, num_train_epochs=2, learning_rate=3e-3, logging_steps=1, save_strategy="no",
    report_to=[], use_cpu=True, disable_tqdm=True, seed=0, graph_weights="cites=0.2", cluster_size=4,
    graph_reweight=reweight, graph_min_weight=0.45 if reweight else 0.0,
)
trainer = RamenTrainer(model=tiny_encoder(), args=args, data=synthetic_data(), processing_class=tokenizer)
trainer.train()
metrics = trainer.evaluate()
trainer.save_predictor(out)
model = trainer.accelerator.unwrap_model(trainer.model)
summary = {
    "world_size": trainer.args.world_size,
    "global_steps": trainer.state.global_step,
    "param_sum": float(sum(p.double().sum() for p in model.parameters())),
    "clusters_refreshed": trainer._batch_sampler.num_refreshes if trainer._batch_sampler is not None else 0,
    "eval_P@1": metrics["eval_P@1"],
}
if reweight:
    pruned = trainer.collator.graphs["cites"][0]
    digest = hashlib.sha256()
    for array in (pruned.indptr, pruned.indices, pruned.data):
        digest.update(array.tobytes())
    summary.update({
        "graph_refreshes": trainer.graph_refreshes,
        "graph_edges": int(trainer.original_graphs["cites"].nnz),
        "graph_edges_kept": int(pruned.nnz),
        "graph_hash": digest.hexdigest(),
        "kept_logged": [log["graph_cites_edges_kept"] for log in trainer.state.log_history if "graph_cites_edges_kept" in log],
    })
with open(os.path.join(out, f"rank{trainer.args.process_index}.json"), "w") as handle:
    json.dump(summary, handle)
# leave the process group together: a worker exiting while another still saves can abort (SIGABRT) in gloo
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
