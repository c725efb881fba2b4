"""Options of a command from a TOML or JSON file (``proxfed run --config FILE``).

The file is a table (TOML) or an object (JSON) whose keys are the command's
long options, with ``-`` or ``_`` (``local-steps`` or ``local_steps``), and
an optional ``data`` table of dataset options (``--data-option``). A value
is what the option takes: a number, a string, ``true`` for a flag, or a list
for an option that takes several values (a single value is a list of one)::

    dataset = "synthetic"
    method = ["Sparse-ProxSkip", "fedht"]
    gamma = [0.0005, 0.001]
    seed = [1, 2, 3]
    communications = 200

    [data]
    n_clients = 20

Every value is checked by the option's own type, so a file and the command
line accept and refuse the same things. An option given on the command line
replaces the file's value (and, for two exclusive options such as
``--iterations`` and ``--communications``, the file's value of the other).
Relative paths are relative to the current directory, as on the command line.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

__all__ = ["read_config", "from_file", "apply_config", "option_name"]


def read_config(path) -> dict:
    """The options in a ``.toml`` or ``.json`` file, as a dict.

    Raises
    ------
    ValueError
        A missing or unreadable file, a syntax error (with its line), an
        unknown suffix, or a document that is not a table.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".toml", ".json"):
        raise ValueError("expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ValueError("reading TOML needs Python >= 3.11 or the tomli package; "
                                 "or write the options as JSON") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not valid TOML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a table of options, got a {type(doc).__name__}")
    return doc


def from_file(parser, path) -> dict:
    """:func:`read_config`, with its failures as usage errors of ``parser`` naming ``--config``."""
    try:
        return read_config(path)
    except ValueError as exc:
        parser.error(f"--config {path}: {' '.join(str(exc).split())}")


def option_name(args, dest: str) -> str:
    """``--dest`` as typed, with ``(in FILE)`` when its value came from the config file."""
    name = "--" + dest.replace("_", "-")
    if dest in getattr(args, "from_file", ()):
        return f"{name} (in {args.config_path})"
    return name


def _actions(parser) -> dict:
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.dest not in ("help", "config")}


def _convert(action, value, where: str):
    """``value`` of the file as the option's argparse type would give it; raises ValueError."""
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value if action.const is True or action.const is None else action.const
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, dict) or (isinstance(value, list) and not many):
        raise ValueError(f"{where}: expected one value, got {value!r}")
    items = list(value) if isinstance(value, list) else [value]
    if many and not items:
        raise ValueError(f"{where}: expected at least one value")
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise ValueError(f"{where}: expected {action.nargs} values, got {len(items)}")
    out = []
    for item in items:
        if isinstance(item, (bool, dict, list)) or item is None:
            raise ValueError(f"{where}: expected a number or a string, got {item!r}")
        if action.type is not None:
            try:
                item = action.type(str(item))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from None
        else:
            item = str(item)
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{where}: expected one of {', '.join(map(str, action.choices))}, got {item!r}")
        out.append(item)
    return out if many else out[0]


def apply_config(parser, args, doc: dict, path, exclusive=()) -> None:
    """Fill the options of ``args`` that the command line left unset from the file's ``doc``.

    Unknown keys and values that the option refuses are usage errors of
    ``parser`` naming the file and the key (with the closest key). The
    ``data`` table goes to ``args.data_file``; ``args.from_file`` collects the
    options taken from the file.
    """
    actions = _actions(parser)
    keys = sorted(k.replace("_", "-") for k in actions) + ["data"]
    given = {dest for dest in actions if getattr(args, dest) is not None}
    for pair in exclusive:
        if any(d in given for d in pair):
            given |= set(pair)
    for key, value in doc.items():
        dest = str(key).replace("-", "_")
        where = f"--config {path}: {key}"
        if dest == "data":
            if not isinstance(value, dict):
                parser.error(f"{where}: expected a table of dataset options (KEY = VALUE)")
            args.data_file = dict(value)
            continue
        if dest not in actions:
            close = difflib.get_close_matches(str(key).replace("_", "-"), keys, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            parser.error(f"--config {path}: unknown key {key!r}{hint} (the keys are the options of "
                         f"{parser.prog}, and [data])")
        if dest in given:
            continue
        try:
            setattr(args, dest, _convert(actions[dest], value, where))
        except ValueError as exc:
            parser.error(str(exc))
        args.from_file.add(dest)
