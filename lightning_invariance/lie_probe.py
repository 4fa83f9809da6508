"""Lie derivatives of a model's layers along a continuous transformation, with forward-mode autodiff."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.func import jvp

from lightning_invariance._layers import OUTPUT, LayerRunner, device_of, features_of, hooks, measuring
from lightning_invariance.functional.lie import GENERATORS, derivative_along

__all__ = ["LieProbe"]

LieConsumer = Callable[[str, Tensor, Tensor], None]
#: Default inputs per forward pass on accelerators (a jvp costs about two forward passes).
ACCELERATOR_LIE_CHUNK_SIZE = 1024


class LieProbe(LayerRunner):
    """Compute ``f(x)`` and its Lie derivative ``L f(x)`` for named layers of a model, chunk by chunk.

    ``L f(x) = d/dt f(T_t x)`` at ``t = 0`` for the layers in ``layers`` (invariance), and
    ``d/dt [f(T_t x) - T_t f(x)]`` for those also in ``equivariant_layers`` (feature maps ``(N, C, H, W)`` that
    should move with the input). The input's derivative along ``generator`` is taken with central differences
    (:func:`~lightning_invariance.functional.lie.derivative_along`), the model's with one ``torch.func.jvp`` per
    chunk; see :mod:`lightning_invariance.functional.lie` for the definitions. The model runs in eval mode with a
    private RNG stream and no autograd graph, and its modes and hooks are restored afterwards, as in
    :class:`~lightning_invariance.Probe`. Every operation in the model needs a forward-mode derivative (standard
    layers have one; ``grid_sample`` inside a model does not).

    Args:
        model: the network (inputs are images ``(N, C, H, W)`` or ``(N, H, W)``).
        generator: ``"rotation"`` (per radian), ``"scaling"`` (per unit log-scale), ``"translation_x"`` or
            ``"translation_y"`` (per input pixel).
        layers: module paths as in ``model.named_modules()``; ``"output"`` is the model output.
        equivariant_layers: the layers (a subset of ``layers``) whose feature maps are compared with the
            transformed map instead of with themselves.
        chunk_size: inputs per jvp; ``None``: 128 on CPU, 1024 on accelerators.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> probe = LieProbe(model, "rotation")
        >>> shapes = []
        >>> probe.run(torch.randn(5, 1, 8, 8), lambda name, f, d: shapes.append((name, tuple(d.shape))))
        >>> shapes
        [('output', (5, 3))]
    """

    accelerator_chunk_size = ACCELERATOR_LIE_CHUNK_SIZE

    def __init__(
        self,
        model: nn.Module,
        generator: str,
        layers: Sequence[str] = (OUTPUT,),
        equivariant_layers: Sequence[str] = (),
        chunk_size: int | None = None,
    ) -> None:
        if generator not in GENERATORS:
            raise ValueError(f"Expected argument `generator` to be one of {GENERATORS} but got {generator!r}.")
        super().__init__(model, layers, chunk_size)
        equivariant_layers = [equivariant_layers] if isinstance(equivariant_layers, str) else list(equivariant_layers)
        stray = [name for name in equivariant_layers if name not in self.layers]
        if stray:
            raise ValueError(f"`equivariant_layers` names {stray}, which are not in `layers` {self.layers}.")
        self.generator, self.equivariant_layers = generator, set(equivariant_layers)

    def run(self, x: Tensor, consume: LieConsumer) -> None:
        """Call ``consume(layer, features, derivatives)`` (both ``(n, ...)``, detached) per layer and chunk."""
        if not isinstance(x, Tensor) or x.ndim < 3 or x.shape[0] == 0 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LieProbe needs a non-empty float image batch (N, H, W) or (N, C, H, W), got {shape}.")
        device = device_of(self.model, x.device)
        chunk = self.inputs_per_pass(device)
        input_size = (x.shape[-2], x.shape[-1])
        captured: dict[str, Tensor] = {}

        def capture(name: str, output: Any) -> None:
            captured[name] = features_of(output, name).clone()  # a later in-place op must not change it

        def forward(inputs: Tensor) -> tuple[Tensor, ...]:
            captured.clear()
            self.model(inputs)
            missing = [name for name in self.layers if name not in captured]
            if missing:
                raise RuntimeError(f"Layer(s) {missing} did not run during the forward pass; check the module paths.")
            return tuple(captured[name] for name in self.layers)

        with measuring(self.model, device), hooks(self._modules, capture):
            for start in range(0, x.shape[0], chunk):
                inputs = x[start : start + chunk].to(device)
                tangent = derivative_along(inputs, self.generator)
                values, derivatives = jvp(forward, (inputs,), (tangent,))
                for name, value, derivative in zip(self.layers, values, derivatives, strict=True):
                    if name in self.equivariant_layers:
                        derivative = derivative - self._moved_derivative(name, value, input_size)
                    consume(name, value.detach(), derivative.detach())

    def _moved_derivative(self, name: str, value: Tensor, input_size: tuple[int, int]) -> Tensor:
        if value.ndim < 3:
            raise ValueError(
                f"Layer {name!r} is in `equivariant_layers` but returned shape {tuple(value.shape)}; the "
                "transformation moves feature maps (N, C, H, W) only."
            )
        return derivative_along(value, self.generator, input_size)
