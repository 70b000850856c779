"""Client side of the DCA-NAS round trip in tests/test_hub.py (run in a subprocess so HF_ENDPOINT / HF_HOME are
set before import).

    python hub_nas_client.py push REPO FOLDER           -> saves a tiny searched network + its ONNX export, pushes
    python hub_nas_client.py pull REPO [REVISION]       -> from_pretrained + the pushed model.onnx with a fresh cache
    python hub_nas_client.py pull-without-plugin REPO   -> AutoModelForImageClassification(trust_remote_code=True)
Each prints one JSON line: logits of a fixed input and the weights' checksum (ONNX logits where there is one).
"""

import json
import sys

command, repo = sys.argv[1], sys.argv[2]
if command == "pull-without-plugin":
    for name in ("hf_compress", "trainers", "model_cards"):
        sys.modules[name] = None  # any import of hf-compress now raises ImportError

import torch  # noqa: E402
from transformers import AutoModelForImageClassification  # noqa: E402

GENOTYPE = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
PIXELS = torch.linspace(-1.0, 1.0, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)


def checksum(model) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


def logits(model) -> list:
    with torch.no_grad():
        return model(pixel_values=PIXELS).logits.tolist()


if command == "push":
    from huggingface_hub import HfApi

    from hf_compress.nas import DCANASConfig, DCANASForImageClassification
    from hf_compress.nas.export import export_onnx

    torch.manual_seed(0)
    model = DCANASForImageClassification(DCANASConfig(genotype=GENOTYPE, init_channels=4, cells_per_stage=1, num_classes=5)).eval()
    folder = sys.argv[3]
    model.save_pretrained(folder)
    export_onnx(model, folder, latency_repeats=2, latency_warmup=1)
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    commit = api.upload_folder(repo_id=repo, folder_path=folder)
    result = {"commit": commit.oid, "logits": logits(model), "checksum": checksum(model)}
elif command == "pull":
    import numpy as np
    import onnxruntime
    from huggingface_hub import hf_hub_download

    from hf_compress.nas import DCANASForImageClassification

    revision = sys.argv[3] if len(sys.argv) > 3 else None
    model = DCANASForImageClassification.from_pretrained(repo, revision=revision).eval()
    session = onnxruntime.InferenceSession(hf_hub_download(repo, "model.onnx", revision=revision))
    onnx_logits = session.run(None, {"pixel_values": PIXELS.numpy().astype(np.float32)})[0]
    result = {"logits": logits(model), "onnx_logits": onnx_logits.tolist(), "checksum": checksum(model),
              "class": type(model).__name__}
else:
    model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
    result = {"logits": logits(model), "checksum": checksum(model), "class": type(model).__name__,
              "module": type(model).__module__}
print(json.dumps(result))
