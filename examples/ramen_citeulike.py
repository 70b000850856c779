"""RAMEN on citeulike-a: paper titles -> user tags, the citation graph as a training-time regularizer.

Copy and adapt: swap `load_citeulike()` for `load_xc_repository("path/to/LF-AmazonTitles-131K")` and the
MiniLM folder for any encoder checkpoint. The saved folder loads with `SentenceTransformer(folder)` (after
`import hf_compress`) and with `XCPredictor.from_pretrained(folder)` for top-k labels.

    python examples/ramen_citeulike.py            # ~10 min on a 2-core CPU (2,000 training titles)
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoTokenizer  # noqa: E402

from hf_compress.data import minilm_path  # noqa: E402
from hf_compress.ramen import RamenEncoder  # noqa: E402
from hf_compress.ramen.data import load_citeulike  # noqa: E402
from hf_compress.ramen.predict import XCPredictor  # noqa: E402
from trainers import RamenTrainer, RamenTrainingArguments  # noqa: E402

data = load_citeulike(min_tag_frequency=5, seed=0)  # seeded 80/20 split, tags with >= 5 papers
n = int(os.environ.get("RAMEN_TRAIN_POINTS", 2000))  # a slice keeps the example short; 0 = all
if n:
    data = data.head(num_train=n)
print(data.summary())

tokenizer = AutoTokenizer.from_pretrained(minilm_path())
model = RamenEncoder.from_backbone(minilm_path(), pooling="mean", max_seq_length=32)

args = RamenTrainingArguments(
    output_dir="outputs/ramen-citeulike",
    per_device_train_batch_size=64,
    learning_rate=2e-5,
    num_train_epochs=1,
    warmup_steps=0.1,
    logging_steps=10,
    save_strategy="no",
    report_to="none",
    graph_weights="citation=0.2",  # "" = no graph; "citation=0.2,coread=0.2" = both graphs
    cluster_size=16,  # NGAME cluster batches, rebuilt from the current encoder every epoch
    label_vectors="text+points",  # index each label by its text + the mean of its train papers (same index size)
    classifier_epochs=5,
)
trainer = RamenTrainer(model=model, args=args, data=data, processing_class=tokenizer)
print("untrained:", trainer.evaluate(metric_key_prefix="untrained"))
trainer.train()
print("trained:", trainer.evaluate())
trainer.train_classifier()
print("with classifier:", trainer.evaluate(metric_key_prefix="classifier"))
folder = trainer.save_predictor()

# queries encoded by onnxruntime (the encoder exported to <folder>/onnx/ on first use): same scores, faster on CPU
predictor = XCPredictor.from_pretrained(folder, encoder_backend="onnxruntime")
for hit in predictor.predict("Community structure in social and biological networks", k=5):
    print(f"{hit['score']:.3f}  {hit['label']}")
