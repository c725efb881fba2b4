"""The extension registry: the core finds proxfed_dl's objects by name, with a clear error without torch."""

import sys

import pytest

from proxfed import extensions
from proxfed.cli import main


def test_entries_name_a_module_and_an_attribute_of_a_known_extra():
    for name, target in extensions.ENTRIES.items():
        module, sep, attribute = target.partition(":")
        assert sep and module and attribute, name
        assert module.partition(".")[0] in extensions.EXTRAS, name


def test_unknown_name():
    with pytest.raises(KeyError, match="registered: reproduce cifar10"):
        extensions.load("nothing")


def test_load_resolves_lazily():
    pytest.importorskip("torch", reason="the entries are proxfed_dl's")
    from proxfed_dl.algorithms import ALGORITHMS
    from proxfed_dl.reproduce import CIFAR10_METHODS, reproduce_cifar10

    assert extensions.load("reproduce cifar10") is reproduce_cifar10
    assert extensions.load("reproduce cifar10 methods") is CIFAR10_METHODS
    assert extensions.load("torch methods") is ALGORITHMS


def _without_proxfed_dl(monkeypatch):
    """As if torch were not installed: proxfed_dl and its already imported modules cannot be imported."""
    for name in ["proxfed_dl", *[m for m in sys.modules if m.startswith("proxfed_dl.")]]:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_extension_names_the_extra(monkeypatch):
    _without_proxfed_dl(monkeypatch)
    with pytest.raises(extensions.MissingExtension) as info:
        extensions.load("reproduce cifar10", purpose="something")
    assert str(info.value).startswith("something needs torch (pip install 'proxfed[dl]'): ")
    assert info.value.requirement == "torch" and info.value.install == "pip install 'proxfed[dl]'"
    assert isinstance(info.value, ImportError)


def test_reproduce_cifar10_without_the_dl_extra(tmp_path, monkeypatch, capsys):
    _without_proxfed_dl(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "reproduce cifar10 needs torch (pip install 'proxfed[dl]'): " in err
    assert not (tmp_path / "out").exists()
