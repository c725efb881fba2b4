"""Extensions the core finds by name, not by import: ``name -> "module:attribute"``.

The core (its command line above all) must run without torch, and must not
import the torch extension :mod:`proxfed_dl`. What it needs from there is
registered here as a string and imported on first use by :func:`load`; when
the extension is missing, the error says which extra to install.

Examples
--------
>>> from proxfed import extensions
>>> extensions.ENTRIES["reproduce cifar10"]
'proxfed_dl.reproduce:reproduce_cifar10'
"""

from __future__ import annotations

import importlib

__all__ = ["ENTRIES", "EXPERIMENTS", "EXTRAS", "MissingExtension", "load"]

#: The registered objects: a name the core uses -> ``"module:attribute"``.
ENTRIES = {
    "reproduce cifar10": "proxfed_dl.reproduce:reproduce_cifar10",
    "reproduce cifar10 methods": "proxfed_dl.reproduce:CIFAR10_METHODS",
    "torch methods": "proxfed_dl.algorithms:ALGORITHMS",
    "torch problem": "proxfed_dl:TorchProblem",
}

#: ``proxfed reproduce`` experiments an extension provides: name -> what it makes (its ``--help``);
#: ``ENTRIES["reproduce <name>"]`` runs it.
EXPERIMENTS = {
    "cifar10": "Figure 4 (ResNet18, needs the dl extra)",
}

#: Top-level package -> (what it needs, the ``pip install`` that brings it).
EXTRAS = {
    "proxfed_dl": ("torch", "pip install 'proxfed[dl]'"),
}


class MissingExtension(ImportError):
    """A registered object's extension cannot be imported (its extra is not installed).

    Attributes
    ----------
    requirement : str
        What the extension needs (``"torch"``).
    install : str
        The command that installs it (``pip install 'proxfed[dl]'``).
    """

    def __init__(self, message: str, requirement: str, install: str):
        super().__init__(message)
        self.requirement = requirement
        self.install = install


def load(name: str, *, purpose: str | None = None):
    """The object registered as ``name``, imported now.

    Parameters
    ----------
    name : str
        A key of :data:`ENTRIES`.
    purpose : str, optional
        What needs it, for the error message (default ``name``).

    Returns
    -------
    object

    Raises
    ------
    KeyError
        ``name`` is not registered.
    MissingExtension
        Its module cannot be imported: ``"<purpose> needs torch (pip install
        'proxfed[dl]'): <the import error>"``.
    """
    if name not in ENTRIES:
        raise KeyError(f"no extension entry {name!r}; registered: {', '.join(ENTRIES)}")
    module_name, _, attribute = ENTRIES[name].partition(":")
    requirement, install = EXTRAS[module_name.partition(".")[0]]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MissingExtension(f"{purpose or name} needs {requirement} ({install}): {err}", requirement,
                               install) from err
    return getattr(module, attribute)
