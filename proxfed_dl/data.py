"""Image clients for torch models: CIFAR-10 and FEMNIST through the core loaders, augmentation, minibatches.

The images of all clients are stacked once (``uint8`` for CIFAR-10, so the
whole training set takes 150 MB) and moved to the device once by the problem;
a minibatch is one ``index_select`` of the rows it needs, never a copy of a
client's data. All randomness (minibatches, crops, flips) is drawn on the host
with :func:`proxfed._backend.rng` from streams keyed by
``(seed, run, step or epoch, client, stream)``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from proxfed import _backend as B
from proxfed.data import FederatedDataset, load_femnist, partition_unbalanced_dirichlet, read_cifar10
from proxfed.data.partition import partition_dirichlet, partition_iid, partition_shards

__all__ = [
    "ImageClients",
    "cifar10_clients",
    "femnist_clients",
    "random_image_clients",
    "random_crop_flip",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

#: Per-channel mean and standard deviation of the CIFAR-10 training images (in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# last element of the RNG keys of proxfed_dl's streams (the core uses 0 and 1)
BATCH_STREAM = 10
SHUFFLE_STREAM = 11
AUGMENT_STREAM = 12
SYNTH_STREAM = 13


class ImageClients:
    """Images of N clients stacked along the first axis, with client offsets and a pooled test split.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, C, H, W)
        ``uint8`` (scaled by 1/255 when a batch is formed) or floating.
    labels : array of int, shape (n,)
        Class labels in ``[0, n_classes)``.
    offsets : array of int, shape (N + 1,)
        Client ``i`` owns rows ``offsets[i]:offsets[i+1]``; every client has at least one row.
    test : tuple of (images, labels), optional
        Pooled test split, same image format.
    n_classes : int, optional
        Default ``max(labels) + 1`` over train and test.
    mean, std : sequence of float, optional
        Per-channel normalization ``(x - mean) / std`` applied after scaling to [0, 1].
    name : str
        A label used in results.
    """

    def __init__(self, images, labels, offsets, *, test=None, n_classes=None, mean=None, std=None,
                 name: str = "images"):
        images = np.asarray(images)
        labels = np.asarray(labels)
        offsets = np.asarray(offsets)
        if images.ndim != 4:
            raise ValueError(f"images must have shape (n, C, H, W), got {images.shape}")
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {images.shape[0]} integers, got shape {labels.shape} "
                             f"and dtype {labels.dtype}")
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size < 2 or offsets[0] != 0 \
                or offsets[-1] != images.shape[0] or np.any(np.diff(offsets) <= 0):
            raise ValueError("offsets must be increasing integers from 0 to n with every client non-empty")
        if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
            raise ValueError("images contain NaN or inf")
        if test is not None:
            ti, tl = np.asarray(test[0]), np.asarray(test[1])
            if ti.shape[1:] != images.shape[1:] or tl.shape != (ti.shape[0],):
                raise ValueError(f"test images must have shape (m, {images.shape[1:]}) with m labels")
            test = (ti, tl.astype(np.int64))
        all_labels = [labels] + ([test[1]] if test is not None and test[1].size else [])
        if min(int(a.min()) for a in all_labels) < 0:
            raise ValueError("labels must be >= 0")
        top = max(int(a.max()) for a in all_labels) + 1
        n_classes = top if n_classes is None else int(n_classes)
        if n_classes < top:
            raise ValueError(f"labels go up to {top - 1} but n_classes = {n_classes}")
        C = images.shape[1]
        for nm, v in (("mean", mean), ("std", std)):
            if v is not None and len(v) != C:
                raise ValueError(f"{nm} must have one value per channel ({C}), got {v!r}")
        if std is not None and min(std) <= 0:
            raise ValueError("std must be positive")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.offsets = offsets.astype(np.int64)
        self.test = test
        self.n_classes = n_classes
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.name = name

    @property
    def n_clients(self) -> int:
        """Number of clients N."""
        return int(self.offsets.size - 1)

    @property
    def client_sizes(self) -> np.ndarray:
        """Rows per client, shape (N,)."""
        return np.diff(self.offsets)

    @property
    def n_samples(self) -> int:
        """Training rows n."""
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    @classmethod
    def from_dataset(cls, dataset: FederatedDataset, image_shape, *, mean=None, std=None,
                     dtype=np.float32) -> "ImageClients":
        """Images from a core :class:`~proxfed.FederatedDataset` of flattened images.

        Parameters
        ----------
        dataset : FederatedDataset
            Rows of ``prod(image_shape)`` features in [0, 1] and integer labels.
        image_shape : tuple of int
            ``(C, H, W)``, or ``(H, W)`` for one channel.
        mean, std : sequence of float, optional
        dtype : numpy dtype
            Storage type of the images.

        Returns
        -------
        ImageClients
        """
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if int(np.prod(shape)) != dataset.n_features:
            raise ValueError(f"image_shape {shape} does not match the {dataset.n_features} features")
        X = dataset.X.astype(dtype).reshape((-1,) + shape)
        test = None
        if dataset.test is not None:
            test = (dataset.test.X.astype(dtype).reshape((-1,) + shape), dataset.test.y)
        n_classes = dataset.meta.get("n_classes") if isinstance(dataset.meta, dict) else None
        return cls(X, dataset.y, dataset.offsets, test=test, n_classes=n_classes, mean=mean, std=std,
                   name=dataset.name)

    def subset(self, clients) -> "ImageClients":
        """The clients ``clients`` (global indices, in that order), with the same test split.

        Parameters
        ----------
        clients : sequence of int

        Returns
        -------
        ImageClients
        """
        clients = [int(c) for c in clients]
        rows = [np.arange(self.offsets[c], self.offsets[c + 1]) for c in clients]
        idx = np.concatenate(rows)
        offsets = np.concatenate([[0], np.cumsum([r.size for r in rows])])
        return ImageClients(self.images[idx], self.labels[idx], offsets, test=self.test, n_classes=self.n_classes,
                            mean=self.mean, std=self.std, name=self.name)

    def __repr__(self) -> str:
        test = 0 if self.test is None else self.test[0].shape[0]
        return (f"ImageClients(name={self.name!r}, N={self.n_clients}, n={self.n_samples}, "
                f"image_shape={self.image_shape}, classes={self.n_classes}, test={test})")


def cifar10_clients(path, *, n_clients: int = 10, partition: str = "unbalanced_dirichlet", alpha: float = 0.3,
                    sigma: float = 0.3, shards_per_client: int = 2, seed: int = 0,
                    min_size: int = 1) -> ImageClients:
    """CIFAR-10 split among clients, as ``uint8`` images (the paper's split by default).

    Reads the batches with :func:`proxfed.data.read_cifar10` and splits the
    training rows with the same partitioner and arguments as
    :func:`proxfed.data.load_cifar10` (FedLab's unbalanced Dirichlet,
    ``N = 10, alpha = 0.3, sigma = 0.3``), so the clients hold exactly the
    rows of ``load_cifar10(path, ...)``, in the same order, but as ``uint8``
    ``(C, H, W)`` images (150 MB instead of 1.2 GB of float64). Normalization
    uses :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`.

    Parameters
    ----------
    path : str or path-like
        As in :func:`proxfed.data.read_cifar10`.
    n_clients : int
    partition : {"unbalanced_dirichlet", "dirichlet", "iid", "shards"}
    alpha, sigma : float
    shards_per_client : int
    seed : int
    min_size : int

    Returns
    -------
    ImageClients
    """
    X, y, Xt, yt, _names = read_cifar10(path)
    if partition == "unbalanced_dirichlet":
        parts = partition_unbalanced_dirichlet(y, n_clients, alpha, sigma, seed, min_size=min_size)
    elif partition == "dirichlet":
        parts = partition_dirichlet(y, n_clients, alpha, seed, min_size=min_size)
    elif partition == "iid":
        parts = partition_iid(y.size, n_clients, seed, min_size=min_size)
    elif partition == "shards":
        parts = partition_shards(y, n_clients, shards_per_client, seed, min_size=min_size)
    else:
        raise ValueError(f"unknown partition {partition!r}; use unbalanced_dirichlet, dirichlet, iid or shards")
    idx = np.concatenate(parts)
    offsets = np.concatenate([[0], np.cumsum([p.size for p in parts])])
    return ImageClients(X[idx], y[idx], offsets, test=(Xt, yt), n_classes=10, mean=CIFAR10_MEAN,
                        std=CIFAR10_STD, name="cifar10")


def femnist_clients(path, n_writers: int | None = 10, *, sample: bool = False, seed: int = 0,
                    invert: bool = False, cache_dir=None) -> ImageClients:
    """FEMNIST writers as natural clients, images of shape (1, 28, 28).

    :func:`proxfed.data.load_femnist` with the same arguments, reshaped; pixels
    in [0, 1] with LEAF's convention (1.0 = background) unless ``invert``; no
    normalization and no augmentation (flipped letters are other letters).

    Parameters
    ----------
    path : str or path-like
    n_writers : int or None
    sample : bool
    seed : int
    invert : bool
    cache_dir : str or path-like, optional

    Returns
    -------
    ImageClients
        62 classes; the chosen writers' test images pooled in ``test``.
    """
    ds = load_femnist(path, n_writers, sample=sample, seed=seed, invert=invert, cache_dir=cache_dir)
    return ImageClients.from_dataset(ds, (1, 28, 28))


def random_image_clients(n_clients: int = 4, per_client=16, *, image_shape=(3, 32, 32), n_classes: int = 10,
                         n_test: int = 32, seed: int = 0) -> ImageClients:
    """Small random ``uint8`` images with class-dependent means (for tests and benchmarks).

    Parameters
    ----------
    n_clients : int
    per_client : int or sequence of int
        Images per client.
    image_shape : tuple of int
        ``(C, H, W)``.
    n_classes : int
    n_test : int
    seed : int

    Returns
    -------
    ImageClients
    """
    if isinstance(per_client, numbers.Integral):
        sizes = [int(per_client)] * int(n_clients)
    else:
        sizes = [int(s) for s in per_client]
        if len(sizes) != n_clients:
            raise ValueError("per_client must be an int or have one size per client")
    gen = B.rng(seed, SYNTH_STREAM)
    centers = gen.uniform(40, 215, (n_classes,) + tuple(image_shape))

    def draw(n, classes):
        x = centers[classes] + gen.normal(0, 40, (n,) + tuple(image_shape))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    ys = [gen.integers(0, max(1, n_classes // 2), s) + (i % 2) * (n_classes // 2) for i, s in enumerate(sizes)]
    y = np.concatenate(ys) % n_classes
    X = draw(y.size, y)
    yt = gen.integers(0, n_classes, n_test)
    return ImageClients(X, y, np.concatenate([[0], np.cumsum(sizes)]), test=(draw(n_test, yt), yt),
                        n_classes=n_classes, mean=(0.5,) * image_shape[0], std=(0.25,) * image_shape[0],
                        name="random_images")


def random_crop_flip(x, offsets, flips, padding: int = 4):
    """Random crop after zero padding, and horizontal flip, with given draws (torch ops, any device).

    Output image ``j`` is ``pad(x[j])[:, oy:oy+H, ox:ox+W]`` with
    ``(oy, ox) = offsets[j]`` in ``[0, 2 padding]``, mirrored left-right where
    ``flips[j]``. Offsets ``(padding, padding)`` and no flip give ``x[j]``.

    Parameters
    ----------
    x : torch.Tensor, shape (n, C, H, W)
    offsets : torch.Tensor of int, shape (n, 2)
    flips : torch.Tensor of bool, shape (n,)
    padding : int

    Returns
    -------
    torch.Tensor, shape (n, C, H, W)
    """
    n, C, H, W = x.shape
    dev = x.device
    offsets = offsets.to(device=dev, dtype=torch.long)
    flips = flips.to(device=dev, dtype=torch.bool)
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        rows = offsets[:, 0:1] + torch.arange(H, device=dev)  # (n, H)
        cols = offsets[:, 1:2] + torch.arange(W, device=dev)  # (n, W)
    else:
        xp = x
        rows = torch.arange(H, device=dev).expand(n, H)
        cols = torch.arange(W, device=dev).expand(n, W)
    cols = torch.where(flips[:, None], cols.flip(-1), cols)
    i = torch.arange(n, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return xp[i, c, rows[:, None, :, None], cols[:, None, None, :]]


def draw_augmentation(seed: int, run: int, step: int, client: int, n: int, padding: int):
    """Crop offsets (n, 2) in ``[0, 2 padding]`` and flips (n,) from the stream ``(seed, run, step, client)``."""
    g = B.rng(seed, run, step, client, AUGMENT_STREAM)
    return g.integers(0, 2 * padding + 1, (n, 2)), g.random(n) < 0.5


class BatchSampler:
    """Row indices of every client's minibatch at a step, keyed by ``(seed, run, step or epoch, client)``.

    ``"shuffle"``: each client walks through its rows in epochs, each epoch a
    permutation drawn from the stream ``(seed, run, epoch, client)``; step
    ``t`` takes positions ``t b .. t b + b - 1`` of that sequence (a batch
    may straddle two epochs, and a client with fewer than ``b`` rows repeats
    rows within a batch). ``"uniform"``: ``b`` rows drawn without
    replacement (with replacement when the client has fewer) from the
    stream ``(seed, run, step, client)``.
    """

    def __init__(self, sizes, batch_size: int, seed: int, mode: str = "shuffle"):
        if mode not in ("shuffle", "uniform"):
            raise ValueError(f"sampling must be 'shuffle' or 'uniform', got {mode!r}")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.mode = mode
        self._perm: dict = {}

    def indices(self, run: int, step: int, client: int, local: int) -> np.ndarray:
        """Rows (within the client) of client ``client`` (global id; ``local`` its position) at ``step``."""
        n, b = int(self.sizes[local]), self.batch_size
        if self.mode == "uniform":
            return B.rng(self.seed, run, step, client, BATCH_STREAM).choice(n, b, replace=n < b)
        lo = step * b
        out = []
        pos = lo
        while pos < lo + b:
            epoch, start = divmod(pos, n)
            take = min(n - start, lo + b - pos)
            out.append(self._permutation(run, epoch, client, n)[start:start + take])
            pos += take
        return np.concatenate(out)

    def _permutation(self, run, epoch, client, n):
        key = (run, client)
        cached = self._perm.get(key)
        if cached is None or cached[0] != epoch:
            cached = (epoch, B.rng(self.seed, run, epoch, client, SHUFFLE_STREAM).permutation(n))
            self._perm[key] = cached
        return cached[1]
