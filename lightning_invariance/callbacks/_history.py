"""What InvarianceMonitor measured: records, their tidy table, the end-of-fit summary, the ``ddp_spawn`` handoff.

A record is ``{"stage", "epoch", "step", "values": {logged name: value}, "keys": {logged name: [dataloader, layer,
score]}}``; ``stage`` is ``"baseline"`` (before training), ``"fit"`` or ``"validate"``.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "SpawnHandoff", "summary_table", "tidy_rows", "write_csv"]

#: The columns of the tidy table, one row per logged value.
COLUMNS = ("stage", "epoch", "step", "dataloader", "layer", "score", "value")


def tidy_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logged value: stage, epoch, step, dataloader (``""`` when one is measured), layer, score, value.

    ``score`` is the logged score's name below the layer, e.g. ``geed_normalized`` or ``geed/rot90`` for a
    per-element value.
    """
    rows = []
    for record in history:
        for name, value in record["values"].items():
            dataloader, layer, score = record.get("keys", {}).get(name, ("", "", name))
            rows.append(
                {
                    "stage": record["stage"],
                    "epoch": record["epoch"],
                    "step": record["step"],
                    "dataloader": dataloader,
                    "layer": layer,
                    "score": score,
                    "value": value,
                }
            )
    return rows


def write_csv(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write :func:`tidy_rows` to ``path`` (parent folders created); the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(tidy_rows(history))
    return path


def summary_table(history: Sequence[dict[str, Any]], title: str, headline: set[tuple[str, str]]) -> str:
    """First versus last value, during ``fit``, of every ``(layer, score)`` in ``headline``, as a printable table."""
    records = [record for record in history if record["stage"] in ("baseline", "fit")]
    if not records:
        return "InvarianceMonitor: nothing measured during fit."
    names: dict[str, None] = {}
    for record in records:
        for name, (_, layer, score) in record.get("keys", {}).items():
            if (layer, score) in headline:
                names[name] = None

    def when(record: dict[str, Any]) -> str:
        return "before training" if record["stage"] == "baseline" else f"epoch {record['epoch']}"

    rows = []
    for name in names:
        seen = [(when(record), record["values"][name]) for record in records if name in record["values"]]
        (first_when, first), (last_when, last) = seen[0], seen[-1]
        rows.append((name, f"{first:.4g} ({first_when})", f"{last:.4g} ({last_when})"))
    header = ("score", "first", "last")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [title]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class SpawnHandoff:
    """Carries the history from a ``ddp_spawn`` worker back to the process that built the callback.

    Lightning sends a pickled copy of every callback to the spawned processes and returns only the weights and
    ``callback_metrics``. The copy in global rank 0 writes its history to a file named after the callback (a token
    made in the constructor, in the system's temporary folder); the original reads it, once, the next time its
    ``history`` is asked for, and removes it.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.creator_pid = os.getpid()

    @property
    def path(self) -> Path:
        return Path(tempfile.gettempdir()) / f"lightning_invariance-history-{self.token}.json"

    @property
    def in_copy(self) -> bool:
        """Whether this object lives in another process than the one that built it (a spawned worker)."""
        return os.getpid() != self.creator_pid

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(list(history)))
        os.replace(partial, self.path)

    def read(self) -> list[dict[str, Any]] | None:
        """The history a worker left, if any (the file is removed)."""
        if self.in_copy or not self.path.exists():
            return None
        history = json.loads(self.path.read_text())
        self.path.unlink(missing_ok=True)
        return history
