"""Equivariance assertions for test suites: many inputs and group elements at once, errors in float64.

``assert_invariant(model, group, inputs)`` and ``assert_equivariant(model, group, action, inputs)`` compare
``f(g . x)`` with ``f(x)`` (or ``rho(g) f(x)``) for every element ``g`` of ``group`` and every input, and on failure
name the worst element and input with both the absolute and the relative error. Tolerances default from the output's
dtype. The model is called as it is (its train/eval mode and grad mode are left to the test, so a model whose forces
are ``-dE/dpos`` can use autograd inside); put it in eval mode for a deterministic check.

Example:
    >>> import torch
    >>> from lightning_invariance.groups import Rotation3D
    >>> def radius(points):  # rotation-invariant: the mean distance to the origin
    ...     return points.norm(dim=-1).mean(dim=-1, keepdim=True)
    >>> errors = assert_invariant(radius, Rotation3D(num_elements=8), torch.randn(16, 10, 3))
    >>> float(errors.relative.max()) < 1e-6  # relative error over 8 rotations x 16 point clouds
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_invariance.batches import Batch, check_batch
from lightning_invariance.groups.actions import RepresentationAction, TrivialAction
from lightning_invariance.groups.base import Group

__all__ = ["EquivarianceErrors", "assert_equivariant", "assert_invariant", "default_tolerances", "equivariance_errors"]

#: (rtol, atol) by output dtype: float64 checks to near rounding, float32 to what its arithmetic allows.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for outputs of ``dtype``."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


@dataclass(frozen=True)
class EquivarianceErrors:
    """Errors of ``f(g . x)`` against the expected output, per element (axis 0) and output row (axis 1), float64.

    A row is an input for per-sample outputs, a node for per-node outputs of a graph batch (``(nodes, ...)``).

    ``absolute``: the largest component-wise error; ``relative``: the error's norm over the expected output's norm
    (over ``1e-300`` when that norm is 0); ``scale``: the expected output's largest absolute component.
    """

    absolute: Tensor
    relative: Tensor
    scale: Tensor
    element_names: list[str]
    #: the dtype the model computed its output in (the tolerances follow it)
    dtype: torch.dtype

    def failures(self, rtol: float, atol: float) -> Tensor:
        """Which (element, input) pairs exceed ``atol + rtol * scale``."""
        return self.absolute > atol + rtol * self.scale

    def worst(self) -> tuple[int, int]:
        """The (element, input) with the largest relative error (absolute error when they tie)."""
        flat = int(torch.argmax(self.relative + self.absolute * 1e-300))
        return divmod(flat, self.relative.shape[1])


def equivariance_errors(
    model: Callable[[Tensor], Any],
    group: Group,
    inputs: Batch,
    action: RepresentationAction | None = None,
    output: Callable[[Any], Tensor] | None = None,
) -> EquivarianceErrors:
    """Compare ``f(g_k . x)`` with ``action(k, f(x))`` for every element and input; one model call per element.

    Args:
        model: any callable on a batch ``(N, ...)``.
        group: the transformations of the inputs.
        inputs: a batch, sample axis first.
        action: how each element should move the output; ``None``: it should not (invariance).
        output: takes the tensor to check out of the model's output (default: the output itself).
    """
    check_batch(inputs, "`inputs`")
    action = action or TrivialAction()
    action.check_group(group)
    select = output or _require_tensor
    reference = select(model(inputs))
    absolute, relative, scale = [], [], []
    for k in range(len(group)):
        transformed = select(model(group.act(inputs, k))).detach().to(torch.float64)
        expected = action.act(reference.detach(), k).to(torch.float64)
        if transformed.shape != expected.shape:
            raise ValueError(
                f"The output for element {group.names[k]!r} has shape {tuple(transformed.shape)}, but the action "
                f"gives {tuple(expected.shape)}."
            )
        rows = expected.shape[0] if expected.ndim else 1  # inputs, or nodes for per-node outputs of graphs
        difference = (transformed - expected).reshape(rows, -1)
        expected = expected.reshape(rows, -1)
        absolute.append(difference.abs().amax(dim=1))
        relative.append(difference.norm(dim=1) / expected.norm(dim=1).clamp_min(1e-300))
        scale.append(expected.abs().amax(dim=1))
    stacked = (torch.stack(absolute), torch.stack(relative), torch.stack(scale))
    return EquivarianceErrors(*stacked, group.names, reference.dtype)


def assert_equivariant(
    model: Callable[[Tensor], Any],
    group: Group,
    action: RepresentationAction | None,
    inputs: Batch,
    rtol: float | None = None,
    atol: float | None = None,
    output: Callable[[Any], Tensor] | None = None,
) -> EquivarianceErrors:
    """Raise ``AssertionError`` unless ``f(g . x) == rho(g) f(x)`` within tolerance for every element and input.

    A pair passes when its largest component error is at most ``atol + rtol * (largest |component| of the expected
    output)``. ``rtol``/``atol`` default from the output's dtype (:func:`default_tolerances`). Returns the errors.
    """
    errors = equivariance_errors(model, group, inputs, action, output)
    default_rtol, default_atol = default_tolerances(errors.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    failed = errors.failures(rtol, atol)
    if bool(failed.any()):
        k, n = errors.worst()
        what = "invariant" if action is None or action.trivial else f"equivariant under {action!r}"
        raise AssertionError(
            f"The model is not {what} for {group!r}: {int(failed.sum())} of {failed.numel()} (element, row) pairs "
            f"exceed atol={atol:g} + rtol={rtol:g} x scale. Worst: element {errors.element_names[k]!r} (index {k}) on "
            f"output row {n} (the input, or the node of a graph batch), relative error "
            f"{float(errors.relative[k, n]):.3g}, largest component error "
            f"{float(errors.absolute[k, n]):.3g} (output scale {float(errors.scale[k, n]):.3g}). Worst relative "
            f"error per element: "
            + ", ".join(
                f"{name} {float(v):.2g}" for name, v in zip(errors.element_names, errors.relative.amax(1), strict=True)
            )
        )
    return errors


def assert_invariant(
    model: Callable[[Tensor], Any],
    group: Group,
    inputs: Batch,
    rtol: float | None = None,
    atol: float | None = None,
    output: Callable[[Any], Tensor] | None = None,
) -> EquivarianceErrors:
    """Raise ``AssertionError`` unless ``f(g . x) == f(x)`` within tolerance (see :func:`assert_equivariant`)."""
    return assert_equivariant(model, group, None, inputs, rtol, atol, output)


def _require_tensor(value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"The model returned a {type(value).__name__}; pass `output=` to take the tensor to check out of it."
        )
    return value
