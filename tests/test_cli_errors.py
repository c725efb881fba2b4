"""Every CLI failure is one line naming the problem (and the option), with status 2 or 1, leaving nothing behind."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxfed.cli import main

BLOG_NAMES = ("blogData_train.csv", "blogData_test-2012.02.01.00_00.csv")


@pytest.fixture
def blog_dir(tmp_path):
    """A folder with BlogFeedback's file names (the CLI checks names; the loader reads the contents)."""
    d = tmp_path / "blog"
    d.mkdir()
    for name in BLOG_NAMES:
        (d / name).write_text("1,2,3\n")
    return d


def _usage_error(argv, capsys, command):
    """Run ``main(argv)``, expect a usage error; return its one message line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: proxfed {command}"), err  # the subcommand's own usage
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(message) == 1, err
    assert message[0].startswith(f"proxfed {command}: error: ")
    return message[0]


@pytest.mark.parametrize("argv, option", [
    (["demo", "--alpha", "-1"], "--alpha"),
    (["demo", "--alpha", "nan"], "--alpha"),
    (["demo", "--alpha", "inf"], "--alpha"),
    (["demo", "--alpha", "0"], "--alpha"),
    (["demo", "--alpha", "ten"], "--alpha"),
    (["demo", "--iterations", "0"], "--iterations"),
])
def test_demo_usage_errors(argv, option, tmp_path, capsys):
    out = tmp_path / "out"
    line = _usage_error(argv + ["--out", str(out)], capsys, "demo")
    assert option in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("alpha", ["inf", "-inf", "nan", "-1", "0"])
def test_reproduce_alpha_must_be_finite_and_positive(alpha, blog_dir, tmp_path, capsys):
    out = tmp_path / "out"
    line = _usage_error(["reproduce", "blogfeedback", "--data-dir", str(blog_dir), f"--alpha={alpha}",
                         "--out", str(out)], capsys, "reproduce")  # (argparse reads "--alpha -inf" as two options)
    assert "--alpha" in line and alpha in line
    assert not out.exists()


@pytest.mark.parametrize("experiment", ["blogfeedback", "femnist", "femnist-appendix-d"])
@pytest.mark.parametrize("what", ["missing", "empty", "a file"])
def test_reproduce_wrong_data_dir(experiment, what, tmp_path, capsys):
    data = tmp_path / "data"
    if what == "empty":
        data.mkdir()
    elif what == "a file" and experiment != "blogfeedback":  # (a file is BlogFeedback's zip: the loader reads it)
        data.write_text("not a dataset")
    out = tmp_path / "results" / "out"
    line = _usage_error(["reproduce", experiment, "--data-dir", str(data), "--out", str(out)], capsys, "reproduce")
    assert f"--data-dir {data}" in line
    assert not (tmp_path / "results").exists()


def test_reproduce_default_out_is_not_made_for_a_wrong_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = _usage_error(["reproduce", "blogfeedback", "--data-dir", "/nonexistent"], capsys, "reproduce")
    assert "--data-dir /nonexistent: no such file or directory" in line
    assert os.listdir(tmp_path) == []


def test_reproduce_cifar10_wrong_data_dir(tmp_path, capsys):
    pytest.importorskip("torch", reason="reproduce cifar10 checks its --data-dir after finding torch")
    (tmp_path / "data").mkdir()
    line = _usage_error(["reproduce", "cifar10", "--data-dir", str(tmp_path / "data"), "--out",
                         str(tmp_path / "out")], capsys, "reproduce")
    assert "--data-dir" in line and "CIFAR-10" in line
    assert os.listdir(tmp_path) == ["data"]


def _out_argvs(blog_dir, out):
    return {
        "demo": ["demo", "--out", str(out)],
        "reproduce": ["reproduce", "blogfeedback", "--data-dir", str(blog_dir), "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["demo", "reproduce"])
def test_out_that_is_a_file(command, blog_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    for out, problem in ((tmp_path / "file", "exists and is not a directory"),
                         (tmp_path / "file" / "sub", "is not a directory")):
        line = _usage_error(_out_argvs(blog_dir, out)[command], capsys, command)
        assert f"--out {out}: " in line and problem in line
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("command", ["demo", "reproduce"])
def test_out_that_is_read_only(command, blog_dir, tmp_path, monkeypatch, capsys):
    """The CLI asks os.access; here it is told that ``locked`` is read-only (root may write anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(locked) and access(p, mode, **kw))
    for out, problem in ((locked, "is not writable"), (locked / "new", f"cannot be made: {locked} is not writable")):
        line = _usage_error(_out_argvs(blog_dir, out)[command], capsys, command)
        assert f"--out {out}: {problem}" in line
    assert os.listdir(locked) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into a read-only directory, so there is no error to see")
def test_out_in_a_really_read_only_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = _usage_error(["demo", "--out", str(locked / "new")], capsys, "demo")
    finally:
        locked.chmod(0o755)
    assert "--out" in line and "not writable" in line


def test_runtime_failure_is_one_line_and_removes_the_empty_out(blog_dir, tmp_path, capsys):
    out = tmp_path / "results" / "out"
    argv = ["reproduce", "blogfeedback", "--data-dir", str(blog_dir), "--out", str(out), "--no-progress"]
    assert main(argv) == 1  # the CSV has 3 columns, not 281: found while loading, after the checks
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("proxfed reproduce: error: ") and "blogData_train.csv" in err and "--debug" in err
    assert not (tmp_path / "results").exists()
    with pytest.raises(ValueError, match="281"):  # DataFormatError, with its traceback
        main(["--debug"] + argv)
    assert not (tmp_path / "results").exists()


def test_runtime_failure_keeps_what_existed_and_what_was_written(tmp_path, monkeypatch, capsys):
    import proxfed.experiments.demo as demo

    def disk_full(out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if kwargs.get("seed") == 1:  # a failure after some work
            (Path(out_dir) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(demo, "run_demo", disk_full)
    assert main(["demo", "--out", str(tmp_path / "new" / "out")]) == 1
    assert capsys.readouterr().err == (
        "proxfed demo: error: [Errno 28] No space left on device (proxfed --debug ... shows the traceback)\n")
    assert os.listdir(tmp_path) == []  # made by the command and left empty: removed
    (tmp_path / "mine").mkdir()
    assert main(["demo", "--out", str(tmp_path / "mine")]) == 1
    assert (tmp_path / "mine").is_dir()  # existed before: kept
    assert main(["demo", "--out", str(tmp_path / "written"), "--seed", "1"]) == 1
    assert os.listdir(tmp_path / "written") == ["config.json"]  # not empty: kept for inspection
    capsys.readouterr()


def test_interrupt_is_one_line(tmp_path, monkeypatch, capsys):
    import proxfed.experiments.demo as demo

    def interrupted(out_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    assert main(["demo", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err == "proxfed demo: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "demo", "--out", str(tmp_path / "out")])


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "proxfed", "reproduce", "blogfeedback", "--data-dir", str(tmp_path / "nowhere"),
         "--out", "X"], capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"proxfed reproduce: error: --data-dir {tmp_path / 'nowhere'}: no such file or directory")
    assert os.listdir(tmp_path) == []
