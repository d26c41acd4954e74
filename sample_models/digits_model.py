"""Architecture of the bundled digits sample: a small CNN for 32×32 grayscale digits.

Loaded through the config's factory entry ``digits_model:build``. The last convolutional
feature map is 8×8, so class activation maps keep real spatial detail, and the head is a
global average pool followed by a single Linear layer, so classic CAM applies too.
"""

from __future__ import annotations

from torch import nn


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def build(num_classes: int = 10) -> nn.Module:
    """Return the untrained digits CNN (input: 1×32×32)."""
    return nn.Sequential(
        *_block(1, 16),
        *_block(16, 32),
        nn.MaxPool2d(2),  # 16×16
        *_block(32, 64),
        nn.MaxPool2d(2),  # 8×8
        nn.Dropout(0.1),
        *_block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )
