"""The image processor a DCA-NAS model ships with: transformers' stock ViT processor set up for CIFAR.

It resizes to ``config.image_size`` (bilinear), rescales to [0, 1] and normalises with the CIFAR-10 channel
statistics. The PIL backend is used (no torchvision needed); it saves as ``"ViTImageProcessor"``, so
``AutoImageProcessor.from_pretrained(folder)`` loads it with either backend, with or without hf-compress.
"""

from __future__ import annotations

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def default_image_processor(config):
    """A ``ViTImageProcessorPil`` sized for ``config`` (CIFAR-10 mean/std for 3 channels, 0.5 / 0.5 else)."""
    try:
        from transformers import ViTImageProcessorPil
    except ImportError:  # transformers < 5: the slow ViT processor is the PIL one
        from transformers import ViTImageProcessor as ViTImageProcessorPil

    channels = getattr(config, "num_channels", 3)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if channels == 3 else ((0.5,) * channels, (0.5,) * channels)
    size = getattr(config, "image_size", 32)
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )
