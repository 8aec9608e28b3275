"""How training reports its progress: silently (the API default) or with rich progress bars."""

from __future__ import annotations

import math
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``4000`` -> ``"1 h 6 min"``.

    >>> format_seconds(42), format_seconds(75), format_seconds(4000)
    ('42 s', '1 min 15 s', '1 h 6 min')
    """
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Reporter(Protocol):
    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None: ...
    def batch_end(self, loss: float | None) -> None: ...
    def epoch_end(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def cache_progress(self, done: int, total: int) -> None: ...
    def stop(self) -> None: ...
    def heartbeat(self, text: str) -> None: ...


class SilentReporter:
    """Reports nothing (for tests and library use)."""

    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None:
        pass

    def batch_end(self, loss: float | None) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def cache_progress(self, done: int, total: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def heartbeat(self, text: str) -> None:
        pass


class RichReporter:
    """One progress bar per epoch with the running train loss, then a line with val AUC/ACC."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task = None
        self._epoch_label = ""
        self._cache: Progress | None = None
        self._cache_task = None

    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None:
        self._epoch_label = f"epoch {epoch + 1}/{epochs}"
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,  # logs and CI get the epoch lines only
        )
        self._progress.start()
        self._task = self._progress.add_task(self._epoch_label, total=n_batches, loss="-")

    def batch_end(self, loss: float | None) -> None:
        if self._progress is not None:
            fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
            self._progress.update(self._task, advance=1, **fields)

    def epoch_end(self, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        star = " [green]*best*[/green]" if record.get("is_best") else ""
        self.console.print(
            f"{self._epoch_label}  loss {record['train_loss']:.4f}  "
            f"val AUC {record['val_auc']:.4f} ACC {record['val_acc']:.4f}  "
            f"lr {record['lr']:.1e}  {record['images_per_s']:.0f} img/s{star}",
            highlight=False,
        )

    def message(self, text: str) -> None:
        self.console.print(text)

    def heartbeat(self, text: str) -> None:
        """A progress line within a long epoch: printed where no progress bar shows (a pipe,
        nohup, a batch scheduler's log)."""
        if not self.console.is_terminal:
            self.console.print(text, highlight=False)

    def stop(self) -> None:
        """Stop a bar left running by an epoch that failed (a NaN loss): rich allows one live
        display at a time, so the next epoch's bar could not start."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def cache_progress(self, done: int, total: int) -> None:
        """A bar while images are decoded into the cache."""
        if self._cache is None:
            self._cache = Progress(
                TextColumn("caching images"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                disable=not self.console.is_terminal,
            )
            self._cache.start()
            self._cache_task = self._cache.add_task("cache", total=total)
        self._cache.update(self._cache_task, completed=done)
        if done >= total:
            self._cache.stop()
            self._cache = None
            self.console.print(f"cached {total} images")
