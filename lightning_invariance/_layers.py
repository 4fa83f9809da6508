"""Capturing named layers of a model while it runs, and the base both probes share.

Resolving layer names (``"output"`` is the model itself; ``torch.compile``'s ``_orig_mod.`` optional), taking the
tensor out of what a module returns, forward hooks, and the measuring context (eval mode, no autograd, eager
execution, private RNG streams, modes restored afterwards). :class:`LayerRunner` holds what
:class:`~lightning_invariance.Probe` and :class:`~lightning_invariance.LieProbe` both need: the checked model,
layers and chunk size, the chunk policy, and ``update`` feeding metrics from ``run``.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from lightning_invariance._checks import check_optional_positive
from lightning_invariance._host_memory import settle_host_allocator
from lightning_invariance._rng import cuda_indices, fork_rng

__all__ = [
    "ACCELERATOR_CHUNK_SIZE",
    "CPU_CHUNK_SIZE",
    "OUTPUT",
    "LayerRunner",
    "device_of",
    "features_of",
    "hooks",
    "measuring",
    "metric_targets",
    "resolve_layers",
    "restore_modes",
]

#: The layer name that denotes the model's own output.
OUTPUT = "output"
#: Default inputs per forward pass (``chunk_size=None``) on CPU and on accelerators.
CPU_CHUNK_SIZE, ACCELERATOR_CHUNK_SIZE = 128, 2048


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


class LayerRunner:
    """The model, the named layers and their modules, the chunk size, and ``update``: what both probes share.

    Subclasses implement ``run(x, consume)``, calling ``consume(layer, *tensors)`` per layer and chunk; ``update``
    hands those tensors to ``metric.update(*tensors)`` of every metric given for the layer.
    """

    #: Default inputs per forward pass on accelerators (``chunk_size=None``); 128 on CPU.
    accelerator_chunk_size = ACCELERATOR_CHUNK_SIZE

    def __init__(self, model: nn.Module, layers: Sequence[str], chunk_size: int | None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got {type(model).__name__}.")
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise ValueError('Expected at least one layer name in `layers` ("output" for the model output).')
        if len(set(layers)) != len(layers):
            raise ValueError(f"`layers` lists a name twice: {layers}.")
        check_optional_positive("chunk_size", chunk_size)
        self.model, self.layers, self.chunk_size = model, layers, chunk_size
        self._modules = resolve_layers(model, layers)

    def inputs_per_pass(self, device: torch.device | None = None) -> int:
        """How many inputs go through one forward pass on ``device`` (``chunk_size``, or the device's default)."""
        if device is None:
            device = device_of(self.model, torch.device("cpu"))
        return self.chunk_size or (CPU_CHUNK_SIZE if device.type == "cpu" else self.accelerator_chunk_size)

    def update(self, x: Any, metrics: Mapping[str, Metric | MetricCollection | Iterable[Metric]]) -> None:
        """Run ``x`` and update ``metrics[layer]`` (a metric, a collection or several) with each chunk's tensors."""
        targets = metric_targets(metrics, self.layers)

        def feed(name: str, *tensors: Tensor) -> None:
            for metric in targets.get(name, ()):
                metric.update(*tensors)

        self.run(x, feed)

    def run(self, x: Any, consume: Callable[..., None]) -> None:
        """Call ``consume(layer, *tensors)`` for each layer and chunk of ``x``."""
        raise NotImplementedError


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
            raise ValueError(
                _unknown_layer_message(name, [n for n in modules if n and "_orig_mod" not in n.split(".")])
            )
    return resolved


def _unknown_layer_message(name: str, valid: list[str]) -> str:
    """What to say of a layer name that is neither the output nor a module path of the model (``valid``)."""
    if not valid:
        return f"Unknown layer {name!r}. This model has no submodules: the one layer to capture is {OUTPUT!r}."
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    shown = ", ".join(repr(n) for n in valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
    return (
        f"Unknown layer {name!r}.{hint} Valid names are {OUTPUT!r} (the model output) and the module paths of "
        f"model.named_modules(): {shown}."
    )


def _uncompiled_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


def device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


@contextlib.contextmanager
def measuring(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no autograd, eager execution and private RNG streams; modes restored on the way out.

    On the CPU, glibc's malloc is first left to keep freed memory for reuse (:mod:`~lightning_invariance._host_memory`).

    Compiled code (``torch.compile`` of the model or of a submodule) runs eagerly here: dynamo would otherwise trace
    the measuring hooks into the graph, or skip hooks registered after compilation, and the captured layers would
    see nothing. The values are those of the eager model, which a compiled model matches to float tolerance.
    """
    if device.type == "cpu":
        settle_host_allocator()  # no page faults for each chunk's temporaries (see _host_memory)
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
def hooks(modules: Mapping[str, nn.Module], capture: Callable[[str, Any], None]) -> Iterator[None]:
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
