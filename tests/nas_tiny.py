"""Tiny DCA-NAS networks shared by the NAS tests (both environments: transformers 5, and 4.57 + optimum-onnx)."""

from __future__ import annotations

import torch

from hf_compress.nas import DARTS_V2, DCANASConfig, DCANASForImageClassification

NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
TINY = {
    "nb201": dict(genotype=NB201_EXAMPLE, init_channels=4, cells_per_stage=1, num_classes=5),
    "darts": dict(search_space="darts", genotype=DARTS_V2, init_channels=4, num_layers=4, num_classes=7),
}


def save_tiny(space: str, folder, seed: int = 0, **overrides) -> DCANASForImageClassification:
    """A tiny ``space`` network saved to ``folder``, with random BN statistics so that an exported graph's folded
    batch norms are not identities."""
    torch.manual_seed(seed)
    model = DCANASForImageClassification(DCANASConfig(**{**TINY[space], **overrides})).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return model
