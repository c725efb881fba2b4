"""One spelling of a torch device, so that devices compare equal wherever they are stored or checked."""

from __future__ import annotations

import torch

__all__ = ["normalize_device"]


def normalize_device(device) -> torch.device:
    """The torch device ``device`` with its index made explicit.

    ``torch.device("cuda")`` and ``torch.device("cuda:0")`` name the same GPU but
    do not compare equal, while every tensor reports the indexed form; a
    problem that stored the bare form would refuse its own iterates. An
    accelerator device without an index gets the current one (0 when the
    library cannot tell); ``cpu`` and indexed devices are returned as they are.

    Parameters
    ----------
    device : str, int or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a GPU index, ...

    Returns
    -------
    torch.device

    >>> normalize_device("cpu"), normalize_device("cuda:1")
    (device(type='cpu'), device(type='cuda', index=1))
    """
    if isinstance(device, bool):
        raise TypeError(f"device must be a str, int or torch.device, got {device!r}")
    dev = torch.device(device)
    if dev.type == "cpu" or dev.index is not None:
        return dev
    module = getattr(torch, dev.type, None)
    try:
        index = int(module.current_device()) if module is not None and module.is_available() else 0
    except (AttributeError, RuntimeError):
        index = 0
    return torch.device(dev.type, index)
