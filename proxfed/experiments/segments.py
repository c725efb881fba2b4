"""Long final runs in stored segments, so that an interrupted reproduction resumes a run where it stopped.

A final run by expected local steps (the ``run`` driver: the rules without a closed form, e.g.
Sparse-ProxSkip-Local at 10⁴ communications, hours on a CPU) runs in about
:data:`SEGMENTS` segments, each a whole number of record spacings. After each segment the state
and the history so far are stored in ``partial/`` beside the run's files, under the run's key; a
later call with the same key continues from there and deletes the folder when the run is done.
Records fall at the multiples of ``every`` in both cases, and :func:`proxfed.run` continues a
state bit for bit, so the result is that of one uninterrupted call (``time`` aside: it adds up
the segments' own times).

A segment that does not complete (a run diverged or was stopped) makes the whole run start over
in one call, which freezes a diverged batched run where the uninterrupted call does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from .._stored import read_back_json, read_back_npz
from .._stored import write_json_atomic as write_json
from ..run_files import load_state, save_state
from ..runner import run

__all__ = ["SEGMENTS", "remaining_iterations", "run_in_segments", "segment_length", "time_left"]

#: About how many segments (checkpoints) a long final run is cut into.
SEGMENTS = 20


def segment_length(iterations: int, every: int, segments: int = SEGMENTS) -> int:
    """Iterations per segment: a multiple of ``every``, about ``iterations / segments``.

    >>> segment_length(10_000, 50), segment_length(100, 50), segment_length(7, 1, segments=2)
    (500, 50, 4)
    """
    return max(1, round(iterations / segments / every)) * every


def time_left(done: int, seconds: float, left: int) -> str:
    """``left`` more iterations at the pace of ``done`` in ``seconds``, in words.

    The unit changes where the rounded number would reach 100 (s, min) or 48 (h).

    >>> time_left(100, 30.0, 200), time_left(100, 30.0, 20_000), time_left(100, 30.0, 2_000_000)
    ('about 60 s left', 'about 1.7 h left', 'about 7 d left')
    >>> time_left(1, 99.7, 1), time_left(1, 5990.0, 1), time_left(1, 47.99 * 3600, 1)
    ('about 2 min left', 'about 1.7 h left', 'about 2 d left')
    >>> time_left(0, float("nan"), 5), time_left(10, -3.0, 5)
    ('time left unknown', 'about 0 s left')
    """
    s = seconds / max(done, 1) * left
    if not math.isfinite(s):
        return "time left unknown"
    s = max(0.0, s)
    if round(s) < 100:
        return f"about {s:.0f} s left"
    if round(s / 60) < 100:
        return f"about {s / 60:.0f} min left"
    if round(s / 3600, 1) < 48:
        return f"about {s / 3600:.1f} h left"
    return f"about {s / 86400:.0f} d left"


def remaining_iterations(where, iterations: int, match: dict | None = None) -> int:
    """Local steps a final run stored under ``where`` still needs, to order the hand-out of cells.

    0 where its ``summary.json`` is stored, ``iterations`` less the stored segments' where
    ``partial/`` holds some, else ``iterations``. ``match`` holds entries of the run's key (e.g.
    its ``params``): a stored run or segment whose key differs in one of them is recomputed, so it
    counts as not stored. An estimate that never raises: an unreadable file counts as absent, and a
    ``summary.json`` without its ``history.npz`` as not stored.
    """
    where = Path(where)

    def stored(path):
        try:
            info = json.loads(path.read_text())
            if not isinstance(info, dict):
                return None
            key = info["key"] if match else None
            if match and any(key.get(name) != value for name, value in match.items()):
                return None
            return info
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None

    if stored(where / "summary.json") is not None and (where / "history.npz").is_file():
        return 0
    progress = stored(where / "partial" / "progress.json")
    try:
        done = int(progress["t"]) if progress is not None else 0
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: a "t" of Infinity
        done = 0
    return max(0, int(iterations) - max(0, done))


def _store(partial, key, res, hist) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    save_state(res.state, partial / "state.tmp.npz")
    np.savez_compressed(partial / "history.tmp.npz", **hist)
    (partial / "state.tmp.npz").replace(partial / "state.npz")
    (partial / "history.tmp.npz").replace(partial / "history.npz")
    write_json(partial / "progress.json", {"key": key, "t": int(res.state.t), "records": len(hist["iteration"]),
                                           "config": res.config})


def _resume(partial, key, like, iterations):
    """``(state, history, config)`` stored under ``key`` in ``partial`` before ``iterations``, or None."""
    info = read_back_json(partial / "progress.json") if (partial / "progress.json").is_file() else None
    if info is None or info.get("key") != key or not (partial / "state.npz").is_file():
        return None
    hist = read_back_npz(partial / "history.npz", required=("iteration", "time"), length=info.get("records"))
    if hist is None:
        return None
    try:
        state = load_state(partial / "state.npz", like=like)
    except ValueError:  # damaged: start over
        return None
    t = int(state.t)
    if t != int(hist["iteration"][-1]) or t != info.get("t") or not 0 < t < iterations:
        return None
    return state, {n: np.asarray(v) for n, v in hist.items()}, info.get("config") or {}


def _join(before: dict, after: dict) -> dict:
    """``before`` then ``after`` without ``after``'s first record (it is ``before``'s last), times added up."""
    out = {}
    for name, v in after.items():
        v = np.asarray(v)[1:]
        if name == "time":
            v = v + before["time"][-1]
        out[name] = np.concatenate([np.asarray(before[name]), v], axis=0)
    return out


def run_in_segments(alg, problem, iterations: int, *, seeds, split, every: int, w0, where, key, progress=False,
                    like=None, say=print):
    """:func:`proxfed.run` of ``iterations`` local steps, in stored segments under ``where / "partial"``.

    Parameters
    ----------
    alg, problem, seeds, split, every, w0, progress
        As for :func:`proxfed.run` (``every`` records; ``w0`` the start).
    iterations : int
    where : path
        The run's folder; ``partial/`` inside it holds the segments until the run is done.
    key : dict
        The run's stored key: a stored segment is continued only under the same key.
    like : array, optional
        Where the stored state goes when resumed (library, device, dtype).
    say : callable
        Receives a line for each stored segment, and when a run resumes or starts over.

    Returns
    -------
    RunResult
        That of one call of :func:`proxfed.run`, with ``config["segments"]`` (computed in this
        call) and ``config["resumed_at"]`` (the iteration this call resumed at; 0 for a fresh run).
    """
    partial = where / "partial"
    length = segment_length(iterations, every)
    resumed = _resume(partial, key, like, iterations)
    state, hist, config = resumed if resumed is not None else (None, None, {})
    resumed_at = 0 if resumed is None else int(state.t)
    if resumed is not None:
        say(f"    resuming at iteration {resumed_at} of {iterations} from {partial}")
    elif length < iterations:
        say(f"    {iterations} iterations in segments of {length}, kept in {partial} until done")
    else:
        say(f"    {iterations} iterations in one segment (nothing to keep before it ends)")
    segments, started = 0, time.perf_counter()
    while state is None or int(state.t) < iterations:
        t = 0 if state is None else int(state.t)
        res = run(alg, problem, min(length, iterations - t), seed=seeds, split=split, every=every,
                  w0=w0 if state is None else None, state=state, progress=progress)
        if res.status != "completed":  # one call from the start freezes a diverged run as it should
            say(f"    a segment ended {res.status!r} at iteration {int(res.state.t)}; running it in one call")
            shutil.rmtree(partial, ignore_errors=True)
            return run(alg, problem, iterations, seed=seeds, split=split, every=every, w0=w0, progress=progress)
        hist = {n: np.asarray(v) for n, v in res.history.items()} if hist is None else _join(hist, res.history)
        config = config or res.config
        state, segments = res.state, segments + 1
        if int(state.t) < iterations:
            _store(partial, key, res, hist)
            t = int(state.t)
            pace = time_left(t - resumed_at, time.perf_counter() - started, iterations - t)
            say(f"    iteration {t} of {iterations} stored in {partial} ({pace})")
    shutil.rmtree(partial, ignore_errors=True)
    config = {**config, "iterations": iterations, "start_iteration": 0, "segments": segments,
              "resumed_at": resumed_at}
    # the message one call gives (the last segment's names only its own iterations)
    return dataclasses.replace(res, history=hist, config=config, message=f"completed {iterations} iterations")
