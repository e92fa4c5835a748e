"""Every ratio the README's benchmark tables quote is in the JSON their row names.

A row of a README table that names ``NAME.json`` (``bench/results/NAME.json``) quotes
figures from it; each ratio (``1.78x``) and percentage (``95.6%``) in the row must be a
value of one of those JSONs at the precision quoted (a fraction or a percentage for the
latter). Targets (``target 1.15x``) are goals, not measurements, and are skipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"

_JSON_NAME = re.compile(r"([\w*.-]+)\.json")
# A number with an x or % suffix; a preceding "target", "<=" or ">=" marks a goal, and
# "reports" a figure cited from a paper.
_FIGURE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(x|%)(?!\w)")
_GOAL = re.compile(r"(target|<=|>=|at least|at most|reports)[^;,()]*$")


def _rows() -> Iterator[tuple[int, str, list[Path]]]:
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if not line.startswith("|") or "bench/results/" not in line:
            continue
        names = {m.group(1) for m in _JSON_NAME.finditer(line)}
        paths = [sorted(RESULTS.glob(f"{Path(name).name}.json")) for name in sorted(names)]
        yield number, line, paths


def _numbers(value) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if math.isfinite(value):
            yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


def _quoted(line: str) -> Iterator[tuple[str, float, int, str]]:
    result = line.rstrip("|").rsplit("|", 1)[-1]  # the result column
    for m in _FIGURE.finditer(result):
        if _GOAL.search(result[max(0, m.start() - 40):m.start()]):
            continue
        text = m.group(1)
        decimals = len(text.split(".")[1]) if "." in text else 0
        yield m.group(0), float(text), decimals, m.group(2)


def _matches(figure: float, decimals: int, unit: str, values: list[float]) -> bool:
    half = 0.5 * 10 ** -decimals + 1e-9
    candidates = values if unit == "x" else values + [100 * v for v in values]
    return any(abs(v - figure) <= half for v in candidates)


ROWS = list(_rows())


def test_the_readme_has_benchmark_rows_that_name_their_json() -> None:
    assert len(ROWS) >= 8
    for number, _line, paths in ROWS:
        assert paths and all(paths), (f"README.md:{number} names a JSON that is not in "
                                      "bench/results")


@pytest.mark.parametrize("row", ROWS, ids=[f"line{n}" for n, _, _ in ROWS])
def test_each_quoted_ratio_is_in_the_json_its_row_names(row) -> None:
    number, line, paths = row
    files = [p for group in paths for p in group]
    values = [v for p in files for v in _numbers(json.loads(p.read_text()))]
    missing = [text for text, figure, decimals, unit in _quoted(line)
               if not _matches(figure, decimals, unit, values)]
    assert not missing, (f"README.md:{number} quotes {missing}, which "
                         f"{[p.name for p in files]} do not hold")


def test_the_check_catches_a_figure_that_is_not_in_the_json() -> None:
    assert _matches(1.78, 2, "x", [1.7812]) and not _matches(1.82, 2, "x", [1.7812])
    assert _matches(95.6, 1, "%", [0.9561]) and not _matches(95.6, 1, "%", [0.9571])
    line = ("| a | b | **1.82x** faster; target 1.15x; 95.6% hit; a paper reports 81.5% "
            "(`bench/results/x.json`) |")
    assert [t for t, *_ in _quoted(line)] == ["1.82x", "95.6%"]
