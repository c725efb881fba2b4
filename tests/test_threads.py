"""proxfed.blas_threads: limits BLAS threads inside a block, restores them, validates its argument."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import proxfed
from proxfed.cli import main
from proxfed.threads import blas_info


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_limits_inside_the_block_and_restores():
    np.ones((8, 8)) @ np.ones((8, 8))  # BLAS loaded
    before = _blas_threads()
    assert before, "numpy's BLAS should be visible to threadpoolctl"
    with proxfed.blas_threads(1):
        assert _blas_threads() == [1] * len(before)
        x = np.ones((32, 32)) @ np.ones((32, 32))
    assert _blas_threads() == before
    assert float(x[0, 0]) == 32.0
    with proxfed.blas_threads(None):  # no change
        assert _blas_threads() == before
    info = blas_info()
    assert any(lib["user_api"] == "blas" and lib["num_threads"] == before[0] for lib in info)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads"):
        with proxfed.blas_threads(bad):
            pass


def test_cli_threads_option(capsys):
    assert main(["--threads", "1", "--version"]) == 0
    assert capsys.readouterr().out.strip() == proxfed.__version__
    with pytest.raises(SystemExit):
        main(["--threads", "0", "--version"])
    assert "--threads must be >= 1" in capsys.readouterr().err
