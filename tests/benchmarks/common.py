"""What every benchmark module shares: percentiles, rounding, timing, progress on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def r(value: float, digits: int = 4) -> float:
    return round(value, digits)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@contextmanager
def step(console: Console, text: str) -> Iterator[None]:
    started = time.perf_counter()
    with console.status(f"{text} …"):
        yield
    console.print(f"[green]✓[/] {text} [dim]{time.perf_counter() - started:.1f} s[/]")


@contextmanager
def progress(console: Console, text: str, total: int) -> Iterator[Callable[..., None]]:
    """`advance(n=1)` moves the bar; `advance(completed=k, total=t)` sets it."""
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(text, total=total)

        def advance(n: int = 1, *, completed: int | None = None, total: int | None = None) -> None:
            if completed is None:
                bar.advance(task, n)
            else:
                bar.update(task, completed=completed, total=total)

        yield advance
    console.print(f"[green]✓[/] {text} [dim]{time.perf_counter() - started:.1f} s[/]")
