"""The figures InvarianceMonitor draws (TensorBoard cannot): score curves per layer, and the depth profile.

Both read tidy rows (``InvarianceMonitor.history_rows()``) and draw one panel per value of the rows' ``dataloader``
column, side by side on a shared y axis; to compare runs, put the run's name in that column. They return a
``matplotlib.figure.Figure`` (no pyplot state, no backend switch): ``figure.savefig("curves.png")``. Needs
matplotlib (the ``examples`` extra).

Example:
    >>> rows = [
    ...     {"stage": "fit", "epoch": e, "step": 10 * e, "dataloader": "", "layer": layer, "score": "geed", "value": v}
    ...     for e in range(3)
    ...     for layer, v in (("conv", 0.8), ("output", 0.5 / (e + 1)))
    ... ]
    >>> figure = curves_figure(rows, "geed", ["conv", "output"], [""])
    >>> figure = depth_profile_figure(rows, "geed", ["conv", "output"], [""])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["curves_figure", "depth_profile_figure"]

#: Markers cycled with the colours, so that layers stay apart in print and for colour-blind readers.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _when(row: dict[str, Any]) -> tuple[int, str]:
    """Sort key and label of a measurement: the baseline first, as "before training"."""
    if row["stage"] == "baseline":
        return -1, "before training"
    return row["epoch"], f"epoch {row['epoch']}"


def _panels(panels: Sequence[str], height: float = 3.4) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * len(panels) + 1.8, height), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, panels, strict=True):
        if name:
            ax.set_title(name, fontsize=11)
        ax.grid(alpha=0.3)
    return figure, list(axes)


def curves_figure(rows: Sequence[dict[str, Any]], score: str, layers: Sequence[str], panels: Sequence[str]) -> Any:
    """``score`` against the training step, one coloured line per layer (legend in ``layers`` order)."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    figure, axes = _panels(panels)
    for ax, dataloader in zip(axes, panels, strict=True):
        for k, layer in enumerate(layers):
            points = sorted(
                (row["step"], row["value"])
                for row in rows
                if row["score"] == score and row["layer"] == layer and row["dataloader"] == dataloader
            )
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, color=colours(k % 10), marker=MARKERS[k % len(MARKERS)], ms=4, label=layer)
        ax.set_xlabel("training step (0: before training)")
    _from_zero(axes, rows, score)
    axes[0].set_ylabel(score)
    axes[-1].legend(title="layer", fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.suptitle(f"{score} of each layer during training", fontsize=11)
    return figure


def depth_profile_figure(
    rows: Sequence[dict[str, Any]], score: str, layers: Sequence[str], panels: Sequence[str]
) -> Any:
    """``score`` against the layer, in ``layers`` order, one line per measurement coloured from early to late."""
    import matplotlib

    whens = sorted({_when(row) for row in rows if row["score"] == score})
    colours = matplotlib.colormaps["viridis"]
    figure, axes = _panels(panels, height=3.8)
    for ax, dataloader in zip(axes, panels, strict=True):
        for k, (key, label) in enumerate(whens):
            by_layer = {
                row["layer"]: row["value"]
                for row in rows
                if row["score"] == score and row["dataloader"] == dataloader and _when(row)[0] == key
            }
            values = [by_layer.get(layer, float("nan")) for layer in layers]
            baseline = key == -1
            ax.plot(
                range(len(layers)),
                values,
                color="0.45" if baseline else colours(0.1 + 0.75 * k / max(1, len(whens) - 1)),
                linestyle="--" if baseline else "-",
                marker="o",
                ms=4,
                label=label,
            )
        ax.set_xticks(range(len(layers)), list(layers), rotation=25, ha="right", fontsize=9)
        ax.set_xlabel("layer (input side → output)")
    _from_zero(axes, rows, score)
    axes[0].set_ylabel(score)
    shown = whens if len(whens) <= 12 else [*whens[:2], whens[-1]]  # a long run: the first and last, dark to light
    handles, labels = axes[-1].get_legend_handles_labels()
    keep = [i for i, label in enumerate(labels) if label in {w[1] for w in shown}]
    axes[-1].legend(
        [handles[i] for i in keep],
        [labels[i] for i in keep],
        title="measured",
        fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
    )
    figure.suptitle(f"{score} through the network, at each measurement", fontsize=11)
    return figure


def _from_zero(axes: Sequence[Any], rows: Sequence[dict[str, Any]], score: str) -> None:
    """Start the shared y axis at 0 when no value is negative, so that 0 (invariant) is on the chart."""
    values = [row["value"] for row in rows if row["score"] == score and row["value"] == row["value"]]
    if values and min(values) >= 0:
        axes[0].set_ylim(bottom=0)
