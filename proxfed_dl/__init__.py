"""proxfed_dl: the proxfed update rules around torch models (ResNet18 and CNN clients).

A :class:`TorchProblem` is a stochastic gradient oracle over the flattened
parameters of N torch client models, stacked as a torch tensor of shape
``(N, P)``: :mod:`proxfed.algorithms` and :func:`proxfed.run` drive it
unchanged (the core is array-API code, and torch is one of its backends).
This package adds the models, the image data and augmentation, the
BatchNorm bookkeeping, a vectorized (``torch.func.vmap``) gradient path and
a ``torch.distributed`` runner; it re-implements no update rule.

Examples
--------
>>> import proxfed, proxfed_dl                                       # doctest: +SKIP
>>> data = proxfed_dl.femnist_clients("../shared/data/femnist", 10)   # doctest: +SKIP
>>> prob = proxfed_dl.TorchProblem(data, proxfed_dl.leaf_cnn())      # doctest: +SKIP
>>> alg = proxfed_dl.make_algorithm("sparse_proxskip", prob, gamma=0.05, p=0.1)  # doctest: +SKIP
>>> res = proxfed.run(alg, prob, 200, w0=prob.initial_point())       # doctest: +SKIP
"""

from .algorithms import ALGORITHMS, ROUND_BASED, WeightTopK, make_algorithm, track_buffers
from .data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageClients,
    cifar10_clients,
    femnist_clients,
    random_crop_flip,
    random_image_clients,
)
from .flat import FlatModel
from .models import BatchNorm2d, LeafCNN, ResNet18, count_parameters, leaf_cnn, resnet18
from .problem import TorchProblem

__all__ = [
    "TorchProblem",
    "FlatModel",
    # models
    "ResNet18",
    "LeafCNN",
    "BatchNorm2d",
    "resnet18",
    "leaf_cnn",
    "count_parameters",
    # data
    "ImageClients",
    "cifar10_clients",
    "femnist_clients",
    "random_image_clients",
    "random_crop_flip",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    # algorithms
    "make_algorithm",
    "track_buffers",
    "WeightTopK",
    "ALGORITHMS",
    "ROUND_BASED",
]
