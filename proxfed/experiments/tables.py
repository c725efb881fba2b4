"""Markdown tables of the reproductions (ours next to the paper's) and a parser for them."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean_se", "markdown_table", "parse_markdown_tables", "format_bits"]


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error ``std(ddof=1) / sqrt(n)`` of the finite values (se = 0 for one value).

    >>> mean_se([1.0, 2.0, 3.0])
    (2.0, 0.5773502691896258)
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan
    if a.size == 1:
        return float(a[0]), 0.0
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def format_bits(bits) -> str:
    """Bits as the paper writes them: ``"1.16 M"``, or ``"never"`` for ``None``/NaN.

    >>> format_bits(1.16e6), format_bits(None)
    ('1.16 M', 'never')
    """
    if bits is None or not np.isfinite(bits):
        return "never"
    return f"{bits / 1e6:.3g} M"


def markdown_table(header, rows) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the others right-aligned).

    >>> print(markdown_table(["a", "b"], [["x", "1"]]))
    | a | b |
    |:---|---:|
    | x | 1 |
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def parse_markdown_tables(text: str) -> list:
    """Every Markdown table of ``text`` as ``(header, rows)`` lists of cell strings.

    Raises ``ValueError`` when a row's cell count differs from its header's.

    >>> parse_markdown_tables("| a | b |\\n|---|---|\\n| x | 1 |\\n")
    [(['a', 'b'], [['x', '1']])]
    """
    tables, current = [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if current is None:
                current = (cells, [])
            elif all(set(c) <= set(":-") and c for c in cells):
                continue
            else:
                if len(cells) != len(current[0]):
                    raise ValueError(f"row {cells} has {len(cells)} cells, the header {len(current[0])}")
                current[1].append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    if current is not None:
        tables.append(current)
    return tables
