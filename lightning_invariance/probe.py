"""Run a model on the orbit of a batch and capture named layers, leaving the model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_invariance._layers import (
    OUTPUT,
    LayerRunner,
    device_of,
    features_of,
    hooks,
    measuring,
    resolve_layers,
)
from lightning_invariance.batches import (
    Batch,
    batch_device,
    batch_size,
    batch_to,
    check_batch,
    orbit_batch,
    slice_batch,
)
from lightning_invariance.groups.base import Group

__all__ = ["OUTPUT", "Probe", "features_of", "resolve_layers"]

Consumer = Callable[[str, Tensor], None]
#: Features of a layer smaller than this many values per chunk are gathered over chunks and handed over together.
GATHER_VALUES = 1 << 18


class Probe(LayerRunner):
    """Compute orbit features ``(|G|, N, ...)`` of a model's layers for a batch, and feed them to metrics.

    The whole orbit of a chunk of samples runs through the model in one forward pass (``|G| x n`` inputs, with
    ``n = max(1, chunk_size // |G|)``), the named layers are captured with forward hooks, and each chunk's features
    go to the metrics from inside the hook, before the forward pass goes on: no copies, one layer's features held at a
    time (so a later in-place operation such as ``ReLU(inplace=True)`` cannot change them), and memory bounded by
    ``chunk_size``. During the pass the model
    is in eval mode under ``torch.no_grad()``, compiled parts run eagerly, and the global RNGs (torch, Python, NumPy)
    are forked; afterwards its modules' train/eval flags, its hooks and every RNG state are as before, even when the
    model raises.

    Args:
        model: the network.
        group: the transformations applied to the inputs.
        layers: module paths as in ``model.named_modules()`` (e.g. ``"features.2"``); ``"output"`` is the model's
            output.
        chunk_size: most inputs (transformed copies included) in one forward pass; ``None`` picks by device:
            128 on CPU (small batches stay in cache: a ResNet-18 runs 2x faster per input than at 1024) and 2048
            on accelerators.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import CyclicRotation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> probe = Probe(model, CyclicRotation(4), layers=["1", "output"])
        >>> {name: tuple(f.shape) for name, f in probe.orbit_features(torch.randn(5, 4, 4)).items()}
        {'1': (4, 5, 3), 'output': (4, 5, 3)}
    """

    def __init__(
        self,
        model: nn.Module,
        group: Group,
        layers: Sequence[str] = (OUTPUT,),
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(group, Group):
            raise TypeError(f"Expected `group` to be a lightning_invariance Group, but got {type(group).__name__}.")
        super().__init__(model, layers, chunk_size)
        self.group = group
        #: The layers in the order they ran in the latest forward pass (network order, for tables and figures).
        self.layer_order: list[str] = []

    def samples_per_chunk(self, device: torch.device | None = None) -> int:
        """How many samples (each with its whole orbit) go through one forward pass on ``device``."""
        return max(1, self.inputs_per_pass(device) // len(self.group))

    def orbit_features(self, x: Batch) -> dict[str, Tensor]:
        """Orbit features of every layer for the batch ``x``: ``{layer: (|G|, N, ...)}``, identity first."""
        parts: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        self.run(x, lambda name, features: parts[name].append(features.clone()))
        return {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}

    def run(self, x: Batch, consume: Consumer) -> None:
        """Call ``consume(layer, features)`` with ``(|G|, n, ...)`` features for each layer and chunk of ``x``.

        ``consume`` runs inside the layer's forward hook, before the rest of the forward pass, so the features need
        no copy (a later in-place operation cannot have changed them yet) and only one layer's features are held at
        a time. They are valid during the call only: clone what you keep. A layer with fewer than
        :data:`GATHER_VALUES` values per chunk (class scores, pooled features) is copied and gathered over chunks
        instead, and handed over in one call per :data:`GATHER_VALUES` values and at the end (in the order the layers
        ran), so the fixed cost of a metric update is paid per gathered block rather than per chunk; samples keep
        their order. When the model's output is not among the layers, every chunk after the first stops its forward
        pass once the last layer is captured (the first runs whole, to check that each layer runs exactly once).
        """
        check_batch(x)
        if batch_size(x) == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else {k: tuple(v.shape) for k, v in x.items()}
            raise ValueError(f"Expected a non-empty batch with the sample axis first, got shape {shape}.")
        self.group.check_input(x)  # before any forward pass
        device = device_of(self.model, batch_device(x))
        calls = dict.fromkeys(self.layers, 0)
        chunk_inputs = [0]
        stop_early = [False]
        gathered = _Gatherer(consume)
        order: list[str] = []  # the layers in the order they ran in this chunk

        def capture(name: str, output: Any) -> None:
            calls[name] += 1
            if calls[name] == 1:
                order.append(name)
            if calls[name] > 1:
                raise RuntimeError(
                    f"Layer {name!r} ran {calls[name]} times in one forward pass; the probe captures modules that run "
                    "exactly once per forward (a module reused in a loop cannot be told apart). Capture another one."
                )
            value = features_of(output, name).detach()
            if value.ndim == 0 or value.shape[0] != chunk_inputs[0]:
                raise RuntimeError(
                    f"Layer {name!r} returned shape {tuple(value.shape)} for a forward pass of {chunk_inputs[0]} "
                    "inputs; the probe needs the sample axis first and one row per input."
                )
            gathered.add(name, value.unflatten(0, (len(self.group), -1)))
            if stop_early[0] and all(count == 1 for count in calls.values()):
                raise _AllCaptured  # the rest of the forward pass computes nothing we measure

        per_chunk = self.samples_per_chunk(device)
        with measuring(self.model, device), hooks(self._modules, capture):
            for start in range(0, batch_size(x), per_chunk):
                chunk = batch_to(slice_batch(x, start, start + per_chunk), device)
                orbit = orbit_batch(self.group, chunk)
                chunk_inputs[0] = batch_size(orbit)
                calls.update(dict.fromkeys(calls, 0))
                order.clear()
                with contextlib.suppress(_AllCaptured):
                    self.model(orbit)
                stop_early[0] = all(module is not self.model for module in self._modules.values())
                silent = [name for name, count in calls.items() if count == 0]
                if silent:
                    raise RuntimeError(
                        f"Layer(s) {silent} did not run during the forward pass, so nothing was "
                        "captured; check the module paths against the model's forward."
                    )
            gathered.flush()
        self.layer_order = list(order)  # the last chunk's: every chunk runs the layers in the same order


class _Gatherer:
    """Hands large features to ``consume`` at once and gathers small ones (copied) into blocks of samples."""

    def __init__(self, consume: Consumer) -> None:
        self.consume = consume
        self.parts: dict[str, list[Tensor]] = {}  # in the order the layers first ran
        self.values: dict[str, int] = {}

    def add(self, name: str, features: Tensor) -> None:
        parts = self.parts.setdefault(name, [])
        if not parts and features.numel() >= GATHER_VALUES:
            self.consume(name, features)
            return
        parts.append(features.clone())
        self.values[name] = self.values.get(name, 0) + features.numel()
        if self.values[name] >= GATHER_VALUES:
            self._hand_over(name)

    def flush(self) -> None:
        """Hand over everything still gathered."""
        for name in self.parts:
            self._hand_over(name)

    def _hand_over(self, name: str) -> None:
        parts = self.parts[name]
        if not parts:
            return
        self.parts[name], self.values[name] = [], 0
        self.consume(name, parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


class _AllCaptured(Exception):
    """Raised from the last captured layer's hook to skip the rest of a forward pass."""
