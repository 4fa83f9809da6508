"""Lightning callbacks."""

from lightning_invariance.callbacks.invariance_monitor import InvarianceMonitor

__all__ = ["InvarianceMonitor"]
