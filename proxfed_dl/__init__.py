"""proxfed_dl: the proxfed update rules around torch models (planned).

This package will provide a stochastic gradient oracle over the flattened
parameters of N torch client models so that :mod:`proxfed.algorithms` and
:func:`proxfed.run` drive deep-learning clients unchanged. It holds no
functionality yet; importing it only checks the package layout.
"""

__all__: list[str] = []
