"""Run a model on the orbit of a batch and capture named layers, leaving the model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from lightning_invariance.groups.base import Group

__all__ = ["OUTPUT", "Probe", "features_of", "resolve_layers"]

#: The layer name that denotes the model's own output.
OUTPUT = "output"

Consumer = Callable[[dict[str, Tensor]], None]


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
    go to the metrics before the next chunk runs, so memory is bounded by ``chunk_size``. During the pass the model
    is in eval mode under ``torch.no_grad()``; afterwards its modules' train/eval flags, its hooks and the global
    torch RNG states are as before, even when the model raises.

    Args:
        model: the network.
        group: the transformations applied to the inputs.
        layers: module paths as in ``model.named_modules()`` (e.g. ``"features.2"``); ``"output"`` is the model's
            output.
        chunk_size: most inputs (transformed copies included) in one forward pass.
        clone_features: copy captured activations at once, so an in-place operation later in the forward (e.g.
            ``ReLU(inplace=True)``) cannot change them. Only the model output is never copied.

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
        chunk_size: int = 1024,
        clone_features: bool = True,
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
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"Expected `chunk_size` to be a positive int, but got {chunk_size!r}.")
        self.model, self.group = model, group
        self.layers = list(layers)
        self.chunk_size, self.clone_features = chunk_size, clone_features
        self._modules = resolve_layers(model, self.layers)

    @property
    def samples_per_chunk(self) -> int:
        """How many samples (each with its whole orbit) go through one forward pass."""
        return max(1, self.chunk_size // len(self.group))

    def orbit_features(self, x: Tensor) -> dict[str, Tensor]:
        """Orbit features of every layer for the batch ``x``: ``{layer: (|G|, N, ...)}``, identity first."""
        parts: dict[str, list[Tensor]] = {name: [] for name in self.layers}

        def collect(features: dict[str, Tensor]) -> None:
            for name, value in features.items():
                parts[name].append(value)

        self.run(x, collect)
        return {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}

    def update(self, x: Tensor, metrics: Mapping[str, Metric | MetricCollection | Iterable[Metric]]) -> None:
        """Run the orbit of ``x`` and update ``metrics[layer]`` (a metric, a collection or several) per chunk."""
        unknown = sorted(set(metrics) - set(self.layers))
        if unknown:
            raise KeyError(f"metrics are given for layers {unknown} that this probe does not capture {self.layers}.")

        def feed(features: dict[str, Tensor]) -> None:
            for name, targets in metrics.items():
                for metric in [targets] if isinstance(targets, (Metric, MetricCollection)) else targets:
                    metric.update(features[name])

        self.run(x, feed)

    def run(self, x: Tensor, consume: Consumer) -> None:
        """Call ``consume({layer: (|G|, n, ...)})`` for each chunk of samples of ``x``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected the input batch to be a torch.Tensor, but got {type(x).__name__}.")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"Expected a non-empty batch with the sample axis first, got shape {tuple(x.shape)}.")
        self.group.act(x[:1], 0)  # shape check before any forward pass
        device = _device_of(self.model, x)
        num_elements = len(self.group)
        captured: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        with _measuring(self.model, device), _hooks(self._modules, captured, self.clone_features):
            for start in range(0, x.shape[0], self.samples_per_chunk):
                chunk = x[start : start + self.samples_per_chunk].to(device)
                orbit = self.group.orbit(chunk).flatten(0, 1)
                for values in captured.values():
                    values.clear()
                self.model(orbit)
                consume(
                    {
                        name: self._take(name, values, orbit.shape[0]).unflatten(0, (num_elements, -1))
                        for name, values in captured.items()
                    }
                )

    def _take(self, name: str, values: list[Tensor], batch_size: int) -> Tensor:
        if len(values) != 1:
            raise RuntimeError(
                f"Layer {name!r} ran {len(values)} times in one forward pass; the probe captures modules that run "
                "exactly once per forward (a module reused in a loop cannot be told apart). Capture another module."
            )
        value = values[0]
        if value.ndim == 0 or value.shape[0] != batch_size:
            raise RuntimeError(
                f"Layer {name!r} returned shape {tuple(value.shape)} for a forward pass of {batch_size} inputs; "
                "the probe needs the sample axis first and one row per input."
            )
        return value


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules; ``"output"`` (or ``""``) is the model itself. Unknown names raise ``ValueError``."""
    modules = dict(model.named_modules())
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
            valid = [n for n in modules if n]
            shown = ", ".join(repr(n) for n in valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
            raise ValueError(
                f"Unknown layer {name!r}. Valid names are {OUTPUT!r} (the model output) and the module "
                f"paths of model.named_modules(): {shown}."
            )
    return resolved


def _device_of(model: nn.Module, x: Tensor) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return x.device


@contextlib.contextmanager
def _measuring(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no autograd and a private RNG stream; each module's train/eval mode restored on the way out."""
    modes = [(module, module.training) for module in model.modules()]
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
            model.eval()
            yield
    finally:
        restore_modes(modes)


def restore_modes(modes: Sequence[tuple[nn.Module, bool]]) -> None:
    """Give each module back its mode through ``train()``, parents first.

    Going through ``train()`` rather than setting ``.training`` lets modules that keep mode-dependent state undo it
    (e2cnn's ``R2Conv`` builds a ``filter`` buffer in eval mode and drops it in train mode).
    """
    for module, training in modes:  # model.modules() lists parents before their children
        if module.training != training:
            module.train(training)


@contextlib.contextmanager
def _hooks(modules: Mapping[str, nn.Module], captured: dict[str, list[Tensor]], clone: bool) -> Iterator[None]:
    handles = []

    def hook_for(name: str, copy: bool) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            value = features_of(output, name).detach()
            captured[name].append(value.clone() if copy else value)

        return hook

    try:
        for name, module in modules.items():
            is_output = name in (OUTPUT, "")
            handles.append(module.register_forward_hook(hook_for(name, clone and not is_output)))
        yield
    finally:
        for handle in handles:
            handle.remove()
