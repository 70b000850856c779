"""Client side of the RAMEN round trip in tests/test_hub.py (run in a subprocess so HF_ENDPOINT / HF_HOME are
set before import).

    python hub_ramen_client.py push REPO FOLDER        -> saves a tiny predictor in FOLDER, pushes it
    python hub_ramen_client.py pull REPO [REVISION]    -> XCPredictor.from_pretrained(REPO) with a fresh cache
    python hub_ramen_client.py pull-without-plugin REPO -> AutoModel(trust_remote_code=True) with hf-compress hidden
Each prints one JSON line: embeddings and top-3 predictions of fixed texts, and the weights' checksum.
"""

import json
import sys

command, repo = sys.argv[1], sys.argv[2]
if command == "pull-without-plugin":
    for name in ("hf_compress", "trainers", "model_cards"):
        sys.modules[name] = None  # any import of hf-compress now raises ImportError

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer, BertConfig, BertTokenizerFast  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
TEXTS = ["w1 w2 w3", "w7", "w10 w11 w30"]


def checksum(model) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


if command == "push":
    from huggingface_hub import HfApi

    from hf_compress.ramen import RamenConfig, RamenEncoder
    from hf_compress.ramen.predict import XCPredictor

    torch.manual_seed(0)
    backbone = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=32)
    encoder = RamenEncoder(RamenConfig(backbone_config=backbone.to_dict())).eval()
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=False)
    predictor = XCPredictor(encoder, tokenizer, [f"w{i}" for i in range(20)])
    folder = predictor.save_pretrained(sys.argv[3])
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    commit = api.upload_folder(repo_id=repo, folder_path=str(folder))
    result = {"commit": commit.oid, "embeddings": predictor.embed(TEXTS).tolist(),
              "top3": [[hit["label_id"] for hit in row] for row in predictor.predict(TEXTS, k=3)],
              "checksum": checksum(encoder)}
elif command == "pull":
    from hf_compress.ramen.predict import XCPredictor

    predictor = XCPredictor.from_pretrained(repo, revision=sys.argv[3] if len(sys.argv) > 3 else None)
    result = {"embeddings": predictor.embed(TEXTS).tolist(), "class": type(predictor.encoder).__name__,
              "top3": [[hit["label_id"] for hit in row] for row in predictor.predict(TEXTS, k=3)],
              "checksum": checksum(predictor.encoder)}
else:
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    with torch.no_grad():
        embeddings = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).pooler_output
    result = {"embeddings": embeddings.tolist(), "class": type(model).__name__, "module": type(model).__module__,
              "checksum": checksum(model)}
print(json.dumps(result))
