"""Lightning callbacks."""

from lightning_invariance.callbacks._history import COLUMNS as HISTORY_COLUMNS
from lightning_invariance.callbacks.figures import curves_figure, depth_profile_figure
from lightning_invariance.callbacks.invariance_monitor import InvarianceMonitor

__all__ = ["HISTORY_COLUMNS", "InvarianceMonitor", "curves_figure", "depth_profile_figure"]
