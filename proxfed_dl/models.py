"""Client models defined here (there is no CPU torchvision): ResNet18 for CIFAR and LEAF's FEMNIST CNN.

Every model is a plain :class:`torch.nn.Module` whose BatchNorm layers are
:class:`BatchNorm2d`, a BatchNorm that can be called inside ``torch.func``
transforms (``grad``, ``vmap``): in training mode it normalizes with the batch
statistics and *reports* the updated running statistics instead of writing
them in place, so that :class:`~proxfed_dl.FlatModel` can return them as an
explicit output for every client.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchNorm2d", "ResNet18", "LeafCNN", "resnet18", "leaf_cnn", "count_parameters"]


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over ``(N, C, H, W)`` that reports its running-statistics update.

    Same parameters (``weight``, ``bias``) and buffers (``running_mean``,
    ``running_var``) as :class:`torch.nn.BatchNorm2d`, without
    ``num_batches_tracked`` (the momentum is fixed). In training mode the
    output is ``F.batch_norm`` with the batch statistics; the updated
    statistics ``(1 - m) running + m batch`` (unbiased variance, as torch) are
    stored in :attr:`new_stats` rather than written into the buffers, which
    makes the layer usable under ``torch.func.grad`` and ``vmap``. In
    evaluation mode it normalizes with the running statistics.

    Parameters
    ----------
    num_features : int
        Channels C.
    eps : float
    momentum : float
        Weight ``m`` of the batch statistics in the running average.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.num_batches_tracked = None
        #: ``(running_mean, running_var)`` after the last training-mode call, or None.
        self.new_stats = None

    def reset_running_stats(self) -> None:
        """Running mean 0 and running variance 1."""
        self.running_mean.zero_()
        self.running_var.fill_(1)

    def forward(self, x):
        """Normalize ``x``; in training mode also set :attr:`new_stats`.

        Under mixed precision (``x`` in bfloat16, parameters in float32) the
        normalization runs in the parameters' dtype.
        """
        if x.dtype != self.weight.dtype:
            x = x.to(self.weight.dtype)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), unbiased=True)
            m = self.momentum
            self.new_stats = ((1 - m) * self.running_mean + m * mean.to(self.running_mean.dtype),
                              (1 - m) * self.running_var + m * var.to(self.running_var.dtype))
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 in the CIFAR form (He et al., 2016): 3x3 stem, no max-pool.

    ``conv3x3(in_channels, w) - BN - ReLU``, four stages of two basic blocks
    with ``w, 2w, 4w, 8w`` channels (strides 1, 2, 2, 2; 1x1 convolution +
    BN shortcuts where the shape changes), global average pooling and a
    linear classifier. With ``width=64`` and 10 classes it has 11,173,962
    trainable parameters. Initialization (:meth:`reset_parameters`):
    Kaiming-normal (fan-out, ReLU) convolutions, BN weight 1 and bias 0,
    torch's default for the classifier.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    width : int
        Channels of the first stage (64 in the paper; smaller for tests).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(width)
        layers, planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**i
            layers.append(nn.Sequential(_BasicBlock(planes, out, stride), _BasicBlock(out, out, 1)))
            planes = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(planes, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every parameter from the initialization (uses torch's global RNG)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x):
        """Logits of shape (batch, num_classes) for images (batch, C, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


class LeafCNN(nn.Module):
    """LEAF's FEMNIST network (Caldas et al., 2018): two 5x5 convolutions and two dense layers.

    ``conv5x5(1, 32, same) - ReLU - maxpool 2 - conv5x5(32, 64, same) - ReLU -
    maxpool 2 - dense(7*7*64, hidden) - ReLU - dense(hidden, num_classes)``; with
    ``hidden=2048`` and 62 classes, 6,603,710 trainable parameters. torch's
    default initialization. ``channels`` and ``hidden`` narrow the network
    (for CPU budgets); the defaults are LEAF's.

    Parameters
    ----------
    num_classes : int
    hidden : int
        Width of the dense layer (2048 in LEAF).
    image_size : int
        Side of the square input (28 for FEMNIST).
    channels : tuple of int
        Output channels of the two convolutions ((32, 64) in LEAF).
    """

    def __init__(self, num_classes: int = 62, hidden: int = 2048, image_size: int = 28, channels=(32, 64)):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        c1, c2 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        side = image_size // 4
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def reset_parameters(self) -> None:
        """Re-draw every parameter with torch's default initialization."""
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            m.reset_parameters()

    def forward(self, x):
        """Logits of shape (batch, num_classes) for images (batch, 1, side, side)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet18:
    """The CIFAR ResNet18 (:class:`ResNet18`).

    Parameters
    ----------
    num_classes, in_channels, width : int
        See :class:`ResNet18`.

    Returns
    -------
    ResNet18
    """
    return ResNet18(num_classes, in_channels, width)


def leaf_cnn(num_classes: int = 62, hidden: int = 2048, image_size: int = 28, channels=(32, 64)) -> LeafCNN:
    """LEAF's FEMNIST CNN (:class:`LeafCNN`).

    Parameters
    ----------
    num_classes, hidden, image_size : int
        See :class:`LeafCNN`.
    channels : tuple of int
        See :class:`LeafCNN`.

    Returns
    -------
    LeafCNN
    """
    return LeafCNN(num_classes, hidden, image_size, channels)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (entries of tensors with ``requires_grad``).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
