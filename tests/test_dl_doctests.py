"""The doctests of proxfed_dl's modules (pytest's --doctest-modules collects only proxfed: proxfed_dl needs torch)."""

import doctest
import importlib
import pkgutil

import pytest

pytest.importorskip("torch", reason="proxfed_dl's doctests need torch (the dl extra; on CPU machines pip install "
                                    "torch==2.13.0 first)")

import proxfed_dl  # noqa: E402

MODULES = ["proxfed_dl"] + [f"proxfed_dl.{m.name}" for m in pkgutil.iter_modules(proxfed_dl.__path__)]


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name):
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} doctest examples failed"
