"""Measure a model over a whole DataLoader, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from tqdm.auto import tqdm

from lightning_invariance._checks import check_optional_positive
from lightning_invariance.groups.base import Group
from lightning_invariance.inputs import make_input_getter
from lightning_invariance.probe import OUTPUT, Probe

__all__ = ["measure"]


def measure(
    model: nn.Module,
    group: Group,
    dataloader: Iterable[Any],
    metrics: Metric | MetricCollection,
    layers: Sequence[str] = (OUTPUT,),
    chunk_size: int | None = None,
    input_key: str | int | Callable[[Any], Tensor] | None = None,
    max_batches: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``metrics`` for every layer over the batches of ``dataloader``; returns ``{layer: compute()}``.

    ``metrics`` is a template: each layer gets its own ``clone()`` (a ``MetricCollection`` gives a dict per layer).
    The input tensor is taken out of each batch as :func:`~lightning_invariance.inputs.make_input_getter` describes.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import CyclicRotation
        >>> from lightning_invariance.metrics import InvarianceDeviation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> loader = [(torch.randn(8, 4, 4), torch.zeros(8)) for _ in range(3)]
        >>> results = measure(model, CyclicRotation(4), loader, InvarianceDeviation(4, normalize=True), progress=False)
        >>> sorted(results), bool(results["output"] > 0)
        (['output'], True)
    """
    if not isinstance(metrics, (Metric, MetricCollection)):
        raise TypeError(f"Expected `metrics` to be a Metric or MetricCollection, got {type(metrics).__name__}.")
    check_optional_positive("max_batches", max_batches)
    probe = Probe(model, group, layers, chunk_size=chunk_size)
    per_layer = {name: metrics.clone() for name in probe.layers}
    get_input = make_input_getter(input_key)
    batches = dataloader if max_batches is None else islice(dataloader, max_batches)
    total = _length(dataloader)
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    for batch in tqdm(batches, total=total, disable=not progress, desc=f"measuring {len(group)}-element orbits"):
        probe.update(get_input(batch), per_layer)
    return {name: metric.compute() for name, metric in per_layer.items()}


def _length(dataloader: Iterable[Any]) -> int | None:
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except TypeError:
        return None
