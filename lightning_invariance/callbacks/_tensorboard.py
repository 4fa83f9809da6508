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

from lightning_invariance.callbacks._figures import curves_figure, depth_profile_figure

__all__ = ["exact_tag", "scalars_layout", "tensorboard_writers", "write_figures", "write_histograms", "write_setup"]


def tensorboard_writers(loggers: Sequence[Any]) -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoard logger."""
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]


def exact_tag(tag: str) -> str:
    """The custom-scalars regex matching ``tag`` alone (TensorBoard reads chart tags as unanchored regexes)."""
    return f"^{re.escape(tag)}$"


def scalars_layout(prefix: str, charts: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The ``add_custom_scalars`` layout: under ``prefix``, one multi-line chart per title, each tag matched exactly."""
    return {prefix: {title: ["Multiline", [exact_tag(tag) for tag in tags]] for title, tags in charts.items() if tags}}


def write_setup(writers: Sequence[Any], prefix: str, setup: Mapping[str, str]) -> None:
    """A markdown table of the set-up (group, layers, distance, ...) as ``<prefix>/setup`` text."""
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in setup.items()]
    for writer in writers:
        writer.add_text(f"{prefix}/setup", "\n".join(lines), global_step=0)


def write_histograms(
    writers: Sequence[Any], prefix: str, deviations: Mapping[str, Sequence[float]], step: int
) -> None:
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
    dataloaders: Sequence[str],
    step: int,
) -> None:
    """The depth profile and the per-layer curves of each score, from the tidy history rows."""
    for score in scores:
        for kind, draw in (("depth_profile", depth_profile_figure), ("curves", curves_figure)):
            figure = draw(rows, score, layers, dataloaders)
            for writer in writers:
                writer.add_figure(f"{prefix}_figures/{kind}/{score}", figure, global_step=step, close=False)
