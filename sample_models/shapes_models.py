"""Architectures of the bundled shapes samples (input: 3×64×64 RGB).

Both are loaded through factory entries of ``config.toml``:

* ``shapes_models:resnet_shapes`` — a small torchvision ``ResNet`` built from torchvision's
  ``Bottleneck`` blocks, one per stage, with bottleneck widths 16-16-32-64 (stage outputs
  64-64-128-256, 0.13 M parameters). The stem is a single 3×3 stride-2 convolution and no
  max-pool; the stage strides are 1, 1, 2, 2, so ``layer4`` (the Grad-CAM target) is 8×8 at
  64×64 input. Module names are those of torchvision's ResNets (``conv1``, ``layer1`` …
  ``layer4``, ``avgpool``, ``fc``). Bottleneck blocks have one 3×3 convolution each, which keeps
  the receptive field of ``layer4`` small (23 pixels): a map cell only sees its neighbourhood, so
  Grad-CAM can tell a corner mark from the shape.
* ``shapes_models:convnet_shapes`` — a plain ``nn.Sequential`` of three conv → ReLU → BatchNorm →
  MaxPool → Dropout blocks (64 → 32 → 16 → 8 pixels), then Flatten + Linear. The automatically
  found target layer is the last block (``"2"``), whose output is 64×8×8.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["VIT_KWARGS", "NarrowResNet", "convnet_shapes", "resnet_shapes", "vit_shapes"]

# timm.create_model("vit_tiny_patch16_224", **VIT_KWARGS): the transformer sample; config.toml's
# entry passes the same values as factory_kwargs
VIT_KWARGS = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 48,
    "depth": 3,
    "num_heads": 3,
    "mlp_ratio": 2.0,
}


class NarrowResNet(ResNet):
    """torchvision's ``ResNet`` with free stage widths and strides and a 3×3 stem, no max-pool.

    ``ResNet.__init__`` hard-codes the widths 64-128-256-512 and the 7×7 stride-2 stem with a
    max-pool; everything else (``_make_layer``, ``forward``, the module names) is torchvision's.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        stem_width: int = 16,
        stem_stride: int = 2,
        strides: Sequence[int] = (1, 1, 2, 2),
    ) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = stem_width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, stem_width, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=strides[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=strides[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=strides[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=strides[3])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def resnet_shapes(num_classes: int = 5) -> nn.Module:
    """The untrained shapes ResNet: 64×64 input, ``layer4`` 256×8×8."""
    return NarrowResNet(Bottleneck, (1, 1, 1, 1), (16, 16, 32, 64), num_classes)


def _block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    )


def convnet_shapes(num_classes: int = 5) -> nn.Module:
    """The untrained conv-block CNN: three blocks (64 → 8 pixels), Flatten, Linear."""
    return nn.Sequential(
        _block(3, 16, 0.1),  # 32×32
        _block(16, 32, 0.1),  # 16×16
        _block(32, 64, 0.2),  # 8×8: the Grad-CAM target found automatically
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, num_classes),
    )


def vit_shapes(num_classes: int = 5) -> nn.Module:
    """The transformer sample: timm's ``vit_tiny_patch16_224`` narrowed by ``VIT_KWARGS`` (class
    token, 48-dim, 3 blocks, MLP ratio 2, 8×8 patches → an 8×8 token grid at 64×64 input).
    timm is imported here, not at module level, so the other samples do not need it."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, **VIT_KWARGS
    )
