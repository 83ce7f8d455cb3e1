"""The cell table shown while a sweep runs (live) and by `sweeper status` (from the ledger)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweeper.core.console import console as make_console

STATUS_STYLE = {"done": "green", "running": "cyan", "pending": "dim", "stopped-early": "yellow",
                "diverged": "red", "failed": "bold red"}


@dataclass
class TrialView:
    """What the table shows of one trial."""

    trial_id: str
    cell_id: str
    method: str
    scale: str
    steps_total: int
    status: str = "pending"
    step: int = 0
    tokens: int = 0
    val_loss: float = math.nan
    best_val_loss: float = math.nan
    tokens_per_s: float = math.nan
    tokens_total: int = 0
    seed: int = 0  # the replicate's seed
    extra: dict[str, Any] = field(default_factory=dict)

    def eta_seconds(self) -> float:
        if self.status != "running" or not (self.tokens_per_s > 0):
            return math.nan
        return (self.tokens_total - self.tokens) / self.tokens_per_s


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render_table(views: list[TrialView], title: str) -> Table:
    table = Table(title=title, expand=False)
    for name in ("cell", "method", "scale", "trial", "status", "step", "tokens", "val loss", "best", "tok/s", "ETA"):
        table.add_column(name, justify="left" if name in ("cell", "method", "scale", "trial", "status") else "right")
    for v in views:
        table.add_row(
            v.cell_id, v.method, v.scale, v.trial_id.removeprefix(f"{v.cell_id}-"),  # t<index>[-s<seed>]
            Text(v.status, style=STATUS_STYLE.get(v.status, "")), f"{v.step}/{v.steps_total}",
            _human(v.tokens), _fmt(v.val_loss), _fmt(v.best_val_loss), _fmt(v.tokens_per_s, 3),
            _duration(v.eta_seconds()),
        )
    return table


def _human(n: float) -> str:
    from sweeper.plan import human

    return human(n)


def summary_line(views: list[TrialView], started: float) -> str:
    counts: dict[str, int] = {}
    for v in views:
        counts[v.status] = counts.get(v.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{len(views)} trials: {parts}; elapsed {_duration(time.time() - started)}"


class LiveTable:
    """A live-refreshing table on a terminal; one line per finished trial elsewhere (CI logs)."""

    def __init__(self, views: list[TrialView], title: str, console: Console | None = None):
        self.views = {v.trial_id: v for v in views}
        self.title = title
        self.console = console or make_console()
        self.started = time.time()
        self.live: Live | None = None

    def __enter__(self) -> LiveTable:
        if self.console.is_terminal:
            self.live = Live(self._renderable(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        else:
            self.console.print(summary_line(list(self.views.values()), self.started))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._renderable())
            self.live.__exit__(None, None, None)
        else:
            self.console.print(self._renderable())

    def _renderable(self) -> Group:
        views = list(self.views.values())
        return Group(render_table(views, self.title), Text(summary_line(views, self.started)))

    def update(self, trial_id: str, **changes: Any) -> None:
        view = self.views[trial_id]
        before = view.status
        for key, value in changes.items():
            setattr(view, key, value)
        if self.live is not None:
            self.live.update(self._renderable())
        elif view.status != before and view.status not in ("running", "pending"):
            self.console.print(
                f"{view.status:>13}  {view.method}/{view.scale} ({view.trial_id}): step {view.step}, "
                f"val loss {_fmt(view.val_loss)}, best {_fmt(view.best_val_loss)}  "
                f"[{summary_line(list(self.views.values()), self.started)}]"
            )
