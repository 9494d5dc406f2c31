"""Data augmentation of whole batches on the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segloss.config.train import Augment


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, aug: Augment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random flips, rotation, zoom and intensity jitter of a whole batch.

    Hand-written because torchvision.transforms.v2 draws one random transform per call (the
    same for every image of a batch), and per-image calls would be slow. Flips, rotation and
    zoom form one affine matrix per image, applied to image and mask together with a single
    ``affine_grid``/``grid_sample`` call; the resampled mask is thresholded at 0.5. Random
    numbers come from ``generator`` on the CPU, so the result does not depend on the device.
    """
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(x.device)

    def sign(p: float) -> torch.Tensor:
        return torch.where(torch.rand(n, generator=generator) < p, -1.0, 1.0).to(x.device)

    fx, fy = sign(aug.hflip), sign(aug.vflip)
    angle = uniform(-aug.rotate, aug.rotate) * (math.pi / 180)
    zoom = uniform(1 - aug.scale, 1 + aug.scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    # theta maps output to input coordinates: rotation @ diag(fx, fy) / zoom.
    theta = torch.stack(
        [torch.stack([cos * fx, -sin * fy, zero], 1), torch.stack([sin * fx, cos * fy, zero], 1)],
        1,
    )
    grid = F.affine_grid(theta, [n, 1, *x.shape[2:]], align_corners=False)
    both = F.grid_sample(torch.cat([x, y], 1), grid, mode="bilinear", align_corners=False)
    contrast = uniform(1 - aug.contrast, 1 + aug.contrast).view(n, 1, 1, 1)
    brightness = uniform(-aug.brightness, aug.brightness).view(n, 1, 1, 1)
    x = (both[:, :3] * contrast + brightness).clamp_(0.0, 1.0)
    y = (both[:, 3:] > 0.5).float()
    return x.contiguous(memory_format=torch.channels_last), y
