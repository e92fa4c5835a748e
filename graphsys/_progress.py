"""Progress bars for long work (tqdm), switchable off for tests and scripts."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


def progress_bar(*, total: int | None, desc: str, unit: str = "it", enable: bool = True,
                 initial: int = 0) -> Any:
    """A tqdm bar (a context manager with ``update(n)``); a silent one if not ``enable``.

    Byte counts are shown with binary prefixes when ``unit == "B"``.
    """
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not enable,
        dynamic_ncols=True,
        leave=False,
    )
