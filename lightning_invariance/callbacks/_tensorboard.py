"""InvarianceMonitor's TensorBoard extras: the custom-scalars layout, a text record of the set-up, figures, histograms.

Tags are grouped so that the headline curves come first: scalars under ``<prefix>/``, figures under
``<prefix>_figures/``, histograms under ``<prefix>_histograms/``. Everything is written at the step the scalars are
logged at (the number of optimizer steps taken; 0 before training).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_invariance.callbacks._results import Naming
from lightning_invariance.callbacks._scores import logged_keys
from lightning_invariance.callbacks.figures import curves_figure, depth_profile_figure
from lightning_invariance.probe import OUTPUT

__all__ = ["exact_tag", "scalars_layout", "tensorboard_writers", "write_figures", "write_histograms", "write_layout"]

#: Scores left out of the figures (read them off the scalars).
FIGURE_SKIPS = {"stderr", "max", "dead_units", "transformation_variance", "sample_variance"}
#: Definitions written with the set-up.
DEFINITIONS = {
    "geed": "mean distance between a transformed input's representation and the reference",
    "geed_normalized": "geed / mean distance between different inputs' representations (0: invariant; 1: a "
    "transformation moves it as far as swapping the input)",
}


def headline_first(scores: Sequence[str]) -> list[str]:
    """The scores with ``geed_normalized``, the one comparable across layers, first."""
    return sorted(scores, key=lambda score: score != "geed_normalized")


def tensorboard_writers(loggers: Sequence[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoard logger."""
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]


def exact_tag(tag: str) -> str:
    """The custom-scalars regex matching ``tag`` alone (TensorBoard reads chart tags as unanchored regexes)."""
    return f"^{re.escape(tag)}$"


def scalars_layout(prefix: str, charts: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The ``add_custom_scalars`` layout: under ``prefix``, one multi-line chart per title, each tag matched exactly."""
    return {prefix: {title: ["Multiline", [exact_tag(tag) for tag in tags]] for title, tags in charts.items() if tags}}


def write_layout(
    writers: Sequence[Any],
    naming: Naming,
    scores: Sequence[str],
    layers: Sequence[str],
    labels: Sequence[str],
    setup: Mapping[str, str],
) -> None:
    """The custom-scalars layout (one chart per score, layers in network order) and the set-up as markdown text."""
    charts = {
        f"{key}, every layer": [
            naming.name(layer, key, label)
            for label in labels
            for layer in layers
            if not (score == "consistency" and layer != OUTPUT)
        ]
        for score in headline_first(scores)
        for key in logged_keys(score)
    }
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in (dict(setup) | DEFINITIONS).items()]
    for writer in writers:
        writer.add_custom_scalars(scalars_layout(naming.prefix, charts))
        writer.add_text(f"{naming.prefix}/setup", "\n".join(lines), global_step=0)


def write_histograms(writers: Sequence[Any], prefix: str, deviations: Mapping[str, Sequence[float]], step: int) -> None:
    """One histogram of per-sample (normalised) deviations per ``{series name: values}``."""
    for name, values in deviations.items():
        tensor = torch.tensor(list(values), dtype=torch.float32)
        for writer in writers:
            writer.add_histogram(f"{prefix}_histograms/{name}", tensor, global_step=step)


def write_figures(
    writers: Sequence[Any],
    prefix: str,
    rows: Sequence[dict[str, Any]],
    scores: Sequence[str],
    layers: Sequence[str],
    step: int,
) -> None:
    """The depth profile and the per-layer curves of each requested score, from the tidy history rows."""
    drawn = [s for s in scores if s not in FIGURE_SKIPS and not (s == "geed" and "geed_normalized" in scores)]
    dataloaders = list(dict.fromkeys(row["dataloader"] for row in rows))
    for score in headline_first(drawn or ["geed"]):
        measured = [layer for layer in layers if any(r["layer"] == layer and r["score"] == score for r in rows)]
        for kind, draw in (("depth_profile", depth_profile_figure), ("curves", curves_figure)):
            if kind == "depth_profile" and len(measured) < 2:
                continue  # one layer (consistency: the output) has no profile
            # curves skip unmeasured layers themselves and keep each layer's colour across scores
            figure = draw(rows, score, measured if kind == "depth_profile" else layers, dataloaders)
            for writer in writers:
                writer.add_figure(f"{prefix}_figures/{kind}/{score}", figure, global_step=step, close=False)
