"""Run a model on the orbit of a batch and capture named layers, leaving the model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from lightning_invariance._rng import cuda_indices, fork_rng
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
from lightning_invariance.metrics._checks import check_optional_positive

__all__ = ["OUTPUT", "Probe", "features_of", "resolve_layers"]

#: The layer name that denotes the model's own output.
OUTPUT = "output"
#: Default inputs per forward pass (``chunk_size=None``) on CPU and on accelerators.
CPU_CHUNK_SIZE, ACCELERATOR_CHUNK_SIZE = 128, 2048

Consumer = Callable[[str, Tensor], None]


def features_of(value: Any, layer: str) -> Tensor:
    """The tensor a module returned: itself, the first tensor of a tuple/list, or ``.tensor`` (e2cnn)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(getattr(value, "tensor", None), Tensor):
        return value.tensor
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, Tensor) or isinstance(getattr(item, "tensor", None), Tensor):
                return features_of(item, layer)
    raise TypeError(
        f"Layer {layer!r} returned a {type(value).__name__}, which holds no tensor the probe can capture (accepted: "
        "a Tensor, a tuple/list whose first tensor is used, or an object with a `.tensor`, e.g. e2cnn's "
        "GeometricTensor). Capture a submodule that returns a tensor instead."
    )


class Probe:
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
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got {type(model).__name__}.")
        if not isinstance(group, Group):
            raise TypeError(f"Expected `group` to be a lightning_invariance Group, but got {type(group).__name__}.")
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError('Expected at least one layer name in `layers` ("output" for the model output).')
        if len(set(layers)) != len(layers):
            raise ValueError(f"`layers` lists a name twice: {list(layers)}.")
        check_optional_positive("chunk_size", chunk_size)
        self.model, self.group = model, group
        self.layers = list(layers)
        self.chunk_size = chunk_size
        self._modules = resolve_layers(model, self.layers)

    def samples_per_chunk(self, device: torch.device | None = None) -> int:
        """How many samples (each with its whole orbit) go through one forward pass on ``device``."""
        if device is None:
            device = _device_of(self.model, torch.device("cpu"))
        chunk = self.chunk_size or (CPU_CHUNK_SIZE if device.type == "cpu" else ACCELERATOR_CHUNK_SIZE)
        return max(1, chunk // len(self.group))

    def orbit_features(self, x: Batch) -> dict[str, Tensor]:
        """Orbit features of every layer for the batch ``x``: ``{layer: (|G|, N, ...)}``, identity first."""
        parts: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        self.run(x, lambda name, features: parts[name].append(features.clone()))
        return {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}

    def update(self, x: Batch, metrics: Mapping[str, Metric | MetricCollection | Iterable[Metric]]) -> None:
        """Run the orbit of ``x`` and update ``metrics[layer]`` (a metric, a collection or several) per chunk."""
        targets = metric_targets(metrics, self.layers)

        def feed(name: str, features: Tensor) -> None:
            for metric in targets.get(name, ()):
                metric.update(features)

        self.run(x, feed)

    def run(self, x: Batch, consume: Consumer) -> None:
        """Call ``consume(layer, features)`` with ``(|G|, n, ...)`` features for each layer and chunk of ``x``.

        ``consume`` runs inside the layer's forward hook, before the rest of the forward pass, so the features need
        no copy (a later in-place operation cannot have changed them yet) and only one layer's features are held at
        a time. They are valid during the call only: clone what you keep.
        """
        check_batch(x)
        if batch_size(x) == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else {k: tuple(v.shape) for k, v in x.items()}
            raise ValueError(f"Expected a non-empty batch with the sample axis first, got shape {shape}.")
        self.group.check_input(x)  # before any forward pass
        device = _device_of(self.model, batch_device(x))
        calls = dict.fromkeys(self.layers, 0)
        chunk_inputs = [0]

        def capture(name: str, output: Any) -> None:
            calls[name] += 1
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
            consume(name, value.unflatten(0, (len(self.group), -1)))

        per_chunk = self.samples_per_chunk(device)
        with _measuring(self.model, device), _hooks(self._modules, capture):
            for start in range(0, batch_size(x), per_chunk):
                chunk = batch_to(slice_batch(x, start, start + per_chunk), device)
                orbit = orbit_batch(self.group, chunk)
                chunk_inputs[0] = batch_size(orbit)
                calls.update(dict.fromkeys(calls, 0))
                self.model(orbit)
                silent = [name for name, count in calls.items() if count == 0]
                if silent:
                    raise RuntimeError(
                        f"Layer(s) {silent} did not run during the forward pass, so nothing was "
                        "captured; check the module paths against the model's forward."
                    )


def metric_targets(
    metrics: Mapping[str, Metric | MetricCollection | Iterable[Metric]], layers: Sequence[str]
) -> dict[str, list[Metric | MetricCollection]]:
    """``{layer: [metrics to update]}`` from a metric, a collection or several per layer; unknown layers raise."""
    unknown = sorted(set(metrics) - set(layers))
    if unknown:
        raise KeyError(f"metrics are given for layers {unknown} that this probe does not capture {list(layers)}.")
    return {
        name: [value] if isinstance(value, (Metric, MetricCollection)) else list(value)
        for name, value in metrics.items()
    }


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules; ``"output"`` (or ``""``) is the model itself. Unknown names raise ``ValueError``.

    In a ``torch.compile``-d model (or submodule) a layer may be named with or without the ``_orig_mod.`` part that
    compilation adds to module paths: ``"0"`` and ``"_orig_mod.0"`` are the same layer.
    """
    modules = dict(model.named_modules())
    for name, module in list(modules.items()):
        modules.setdefault(_uncompiled_name(name), module)
    if OUTPUT in modules:
        raise ValueError(
            f"The model has a submodule named {OUTPUT!r}, which clashes with the name of the model's "
            "output; rename that submodule to capture it."
        )
    resolved = {}
    for name in layers:
        if name in (OUTPUT, ""):
            resolved[name] = model
        elif name in modules:
            resolved[name] = modules[name]
        else:
            valid = [n for n in modules if n and "_orig_mod" not in n.split(".")]
            shown = ", ".join(repr(n) for n in valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
            raise ValueError(
                f"Unknown layer {name!r}. Valid names are {OUTPUT!r} (the model output) and the module "
                f"paths of model.named_modules(): {shown}."
            )
    return resolved


def _uncompiled_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


def _device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


@contextlib.contextmanager
def _measuring(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no autograd, eager execution and private RNG streams; modes restored on the way out.

    Compiled code (``torch.compile`` of the model or of a submodule) runs eagerly here: dynamo would otherwise trace
    the measuring hooks into the graph, or skip hooks registered after compilation, and the captured layers would
    see nothing. The values are those of the eager model, which a compiled model matches to float tolerance.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad(), fork_rng(cuda_indices(device)), _eager(model):
            model.eval()
            yield
    finally:
        restore_modes(modes)


def _eager(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Run ``torch.compile``-d code eagerly inside the block; without compiler stances (torch < 2.6), refuse."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is not None:
        return set_stance("force_eager")
    if any(type(module).__name__ == "OptimizedModule" for module in model.modules()):
        raise RuntimeError(
            "Measuring a torch.compile-d model needs torch >= 2.6 (torch.compiler.set_stance), this is "
            f"{torch.__version__}: measure the uncompiled module (`compiled._orig_mod`) instead."
        )
    return contextlib.nullcontext()


def restore_modes(modes: Sequence[tuple[nn.Module, bool]]) -> None:
    """Give each module back its mode through ``train()``, parents first.

    Going through ``train()`` rather than setting ``.training`` lets modules that keep mode-dependent state undo it
    (e2cnn's ``R2Conv`` builds a ``filter`` buffer in eval mode and drops it in train mode).
    """
    for module, training in modes:  # model.modules() lists parents before their children
        if module.training != training:
            module.train(training)


@contextlib.contextmanager
def _hooks(modules: Mapping[str, nn.Module], capture: Callable[[str, Any], None]) -> Iterator[None]:
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            capture(name, output)

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
