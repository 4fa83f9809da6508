"""How much of training InvarianceMonitor's measurements take, and the budget that decides whether to measure.

Measuring costs |G| x ``max_samples`` forward passes per measured validation run, whatever the implementation; with
``max_overhead`` the user says how much that may be, as a fraction of the time spent training (the fit's epochs,
the measurements themselves left out). Before each measurement the callback checks that the time spent measuring so
far plus the last measurement's cost stays within ``max_overhead`` of the training time so far; if not, that
validation run is not measured. The inputs stay the same, so the measured points stay comparable; they only get
sparser. The first measurement of a fit is always taken.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Budget"]


class Budget:
    """Timers of training and measuring, and the decision to measure under ``max_overhead`` (``None``: always)."""

    def __init__(self, max_overhead: float | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_overhead, self.clock = max_overhead, clock
        self.train_seconds = 0.0  # fit epochs, measuring excluded
        self.measure_seconds = 0.0
        self.last_cost: float | None = None
        self.skipped = 0
        self._epoch_start: float | None = None
        self._measured_in_epoch = 0.0
        self._current = 0.0

    def epoch_started(self) -> None:
        self._epoch_start, self._measured_in_epoch = self.clock(), 0.0

    def epoch_ended(self) -> None:
        if self._epoch_start is not None:
            self.train_seconds += self.clock() - self._epoch_start - self._measured_in_epoch
            self._epoch_start = None

    def training_so_far(self) -> float:
        """Training time, the running epoch's part included."""
        running = 0.0 if self._epoch_start is None else self.clock() - self._epoch_start - self._measured_in_epoch
        return self.train_seconds + running

    def affordable(self) -> bool:
        """Whether one more measurement keeps measuring within ``max_overhead`` of training (counts a skip if not)."""
        if self.max_overhead is None or self.last_cost is None:
            return True
        if self.measure_seconds + self.last_cost <= self.max_overhead * self.training_so_far():
            return True
        self.skipped += 1
        return False

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Count the block as measuring time (of the current measurement)."""
        start = self.clock()
        try:
            yield
        finally:
            spent = self.clock() - start
            self.measure_seconds += spent
            self._measured_in_epoch += spent
            self._current += spent

    def measurement_done(self) -> float:
        """Close the current measurement; its cost in seconds."""
        cost, self._current = self._current, 0.0
        self.last_cost = cost
        return cost

    def summary(self) -> str:
        """One line: what measuring cost against training, and what the budget skipped."""
        share = self.measure_seconds / self.train_seconds if self.train_seconds > 0 else float("nan")
        line = (
            f"measuring took {self.measure_seconds:.1f} s, {100 * share:.0f}% of the {self.train_seconds:.1f} s of "
            "training"
        )
        if self.max_overhead is not None:
            line += f" (max_overhead={self.max_overhead:g}: {self.skipped} validation run(s) left unmeasured)"
        return line

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_seconds": self.train_seconds,
            "measure_seconds": self.measure_seconds,
            "last_cost": self.last_cost,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.measure_seconds = float(state.get("measure_seconds", 0.0))
        self.last_cost = state.get("last_cost")
        self.skipped = int(state.get("skipped", 0))
