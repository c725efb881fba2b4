"""proxfed.memory: freed large arrays are reused instead of faulted in again."""

import subprocess
import sys

import pytest

from proxfed.memory import _glibc

# a fresh interpreter per setting: mallopt changes the whole process
_SCRIPT = """
import resource, sys
import numpy as np
from proxfed.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
a = np.ones((4, 100, 48670)); del a  # the size of a FEMNIST batch's gradients
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    a = np.ones((4, 100, 48670)); a += 1.0; del a
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


def _faults_per_array(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(_glibc() is None, reason="needs glibc")
def test_keep_freed_memory_reuses_large_arrays_without_page_faults():
    default, kept = _faults_per_array("default"), _faults_per_array("keep")
    assert default > 50  # each 156 MB array is mapped afresh (huge pages or 4 KiB ones)
    assert kept < 10 and kept < default / 10


def test_keep_freed_memory_reports_whether_it_applied_and_restores():
    import proxfed.memory as memory

    if _glibc() is None:
        assert memory.keep_freed_memory() is False
        return
    try:
        assert memory.keep_freed_memory() is True and memory.settings["keep_freed_memory"] is True
    finally:
        assert memory.keep_freed_memory(False) is True
    assert memory.settings["keep_freed_memory"] is False


@pytest.mark.skipif(_glibc() is None, reason="needs glibc")
def test_cli_keeps_freed_memory_for_the_command_only(monkeypatch):
    import proxfed.cli as cli
    import proxfed.memory as memory

    seen = []
    monkeypatch.setattr(cli, "_main", lambda parser, args: seen.append(memory.settings["keep_freed_memory"]) or 0)
    assert cli.main(["--version"]) == 0 and cli.main(["--release-memory", "--version"]) == 0
    assert seen == [True, False]  # on during the command unless --release-memory ...
    assert memory.settings["keep_freed_memory"] is False  # ... and off again for the caller


@pytest.mark.skipif(_glibc() is None, reason="needs glibc")
def test_run_json_records_the_memory_setting():
    import proxfed.memory as memory
    from proxfed.experiments._common import machine as _machine

    try:
        memory.keep_freed_memory()
        assert _machine()["keep_freed_memory"] is True
    finally:
        memory.keep_freed_memory(False)
    assert _machine()["keep_freed_memory"] is False
