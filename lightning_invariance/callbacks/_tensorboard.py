"""TensorBoard extras: a custom-scalars layout (one chart per score, all layers) and per-element figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["figure_of_per_element_scores", "scalars_layout"]


def scalars_layout(prefix: str, names_by_score: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The ``add_custom_scalars`` layout: under ``prefix``, one multi-line chart per score over every layer."""
    charts = {f"{score}: all layers": ["Multiline", list(names)] for score, names in names_by_score.items() if names}
    return {prefix: charts}


def figure_of_per_element_scores(
    title: str, element_names: Sequence[str], per_layer: Mapping[str, Sequence[float]], ylabel: str
) -> Any:
    """Grouped bars: one group per group element, one bar per layer. Needs matplotlib (the ``examples`` extra).

    Built with ``matplotlib.figure.Figure`` (no pyplot state, no backend switch), ready for ``add_figure``.
    """
    from matplotlib.figure import Figure

    width = 0.8 / max(1, len(per_layer))
    figure = Figure(figsize=(max(5.0, 0.9 * len(element_names) + 3.5), 3.2), layout="constrained")
    axes = figure.subplots()
    for index, (layer, values) in enumerate(per_layer.items()):
        positions = [k + (index - (len(per_layer) - 1) / 2) * width for k in range(len(element_names))]
        axes.bar(positions, list(values), width=width, label=layer)
    axes.set_xticks(range(len(element_names)), list(element_names), rotation=30, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return figure
