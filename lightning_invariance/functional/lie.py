"""Lie derivatives (Gruver et al., ICLR 2023): how fast a representation changes along a continuous transformation.

For a one-parameter family of transformations ``T_t`` (rotation by ``t`` radians, scaling by ``e^t``, translation
by ``t`` input pixels) with ``T_0`` the identity, the Lie derivative of a representation is

    L f(x) = d/dt f(T_t x) at t = 0                         (invariance), or
    L f(x) = d/dt [f(T_t x) - T_t f(x)] at t = 0             (equivariance of a feature map moved by T_t).

It is 0 exactly when ``f`` is infinitesimally invariant (equivariant). The image's derivative along the
transformation is its spatial gradient (central differences, zeros outside the image as for ``grid_sample``'s zero
padding) dotted with the transformation's vector field; the representation's derivative is the Jacobian-vector
product of the model in that direction (``torch.func.jvp``). Scores here use the Euclidean norm per sample:
``||L f(x)||`` (raw) and ``||L f(x)|| / ||f(x)||`` (normalised: the relative change per unit of ``t``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GENERATORS", "derivative_along", "lie_derivative"]

#: The one-parameter families: rotation (per radian, counter-clockwise as ``rot90``), scaling (per unit of
#: log-scale, > 0 enlarges) and translations (per input pixel, towards larger column / row indices).
GENERATORS = ("rotation", "scaling", "translation_x", "translation_y")


@functools.lru_cache(maxsize=32)
def _vector_field(
    generator: str,
    height: int,
    width: int,
    input_size: tuple[int, int] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """``(d_row, d_col)`` per pixel and per unit of ``t``, in this map's pixels, as ``(H, W)`` tensors on ``device``.

    Built in float64 on the CPU once per shape and device: copying it to an accelerator in every chunk would make
    the host wait each time.
    """
    rows = ((2 * torch.arange(height, dtype=torch.float64) + 1) / height - 1).view(-1, 1).expand(height, width)
    cols = ((2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1).view(1, -1).expand(height, width)
    in_height, in_width = input_size if input_size is not None else (height, width)
    zeros = torch.zeros(height, width, dtype=torch.float64)
    # the output pixel p takes the input's value at A_t p (normalised coordinates): d/dt x(A_t p) = grad x . (A' p)
    if generator == "rotation":
        d_col, d_row = -rows, cols
    elif generator == "scaling":
        d_col, d_row = -cols, -rows
    elif generator == "translation_x":
        d_col, d_row = zeros - 2.0 / in_width, zeros
    else:
        d_col, d_row = zeros, zeros - 2.0 / in_height
    return (d_row * height / 2).to(device, dtype), (d_col * width / 2).to(device, dtype)


def derivative_along(images: Tensor, generator: str, input_size: tuple[int, int] | None = None) -> Tensor:
    """``d/dt T_t(images)`` at ``t = 0`` for images ``(..., H, W)``: central-difference gradient dotted with the field.

    ``input_size`` is the ``(H, W)`` of the network input when ``images`` are feature maps of another size (a
    translation by one input pixel moves a stride-2 map by half a pixel); rotations and scalings do not need it.

    Example:
        >>> import torch
        >>> ramp = torch.arange(5.0).repeat(5, 1)  # increases along columns
        >>> derivative_along(ramp, "translation_x")[2, 1:4]  # shifting right lowers every interior value by 1
        tensor([-1., -1., -1.])
    """
    if images.ndim < 2:
        raise ValueError(f"Expected images of shape (..., H, W), but got shape {tuple(images.shape)}.")
    height, width = images.shape[-2:]
    if generator not in GENERATORS:
        raise ValueError(f"Expected argument `generator` to be one of {GENERATORS} but got {generator!r}.")
    size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
    d_row, d_col = _vector_field(generator, height, width, size, images.device, images.dtype)
    flat = images.reshape(-1, 1, height, width)
    padded = F.pad(flat, (1, 1, 1, 1))
    grad_row = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    grad_col = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    return (grad_row * d_row + grad_col * d_col).reshape(images.shape)


def _lie_update(features: Tensor, derivatives: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``||L f(x)||`` and ``||f(x)||`` (float64, shape ``(N,)``)."""
    if features.shape != derivatives.shape or features.ndim < 1:
        raise ValueError(
            "Expected `features` and `derivatives` of the same shape (N, ...), but got "
            f"{tuple(features.shape)} and {tuple(derivatives.shape)}."
        )
    if features.is_complex():
        features, derivatives = torch.view_as_real(features), torch.view_as_real(derivatives)
    flat_derivatives = derivatives.to(torch.float64).reshape(derivatives.shape[0], -1)
    flat_features = features.to(torch.float64).reshape(features.shape[0], -1)
    return flat_derivatives.norm(dim=1), flat_features.norm(dim=1)


def lie_derivative(features: Tensor, derivatives: Tensor, normalize: bool = False) -> Tensor:
    r"""Mean Lie derivative norm over samples: :math:`\frac{1}{N}\sum_x \|L f(x)\| / \|f(x)\|` (or unnormalised).

    Samples with ``f(x) = 0`` are left out of the normalised mean (NaN if every sample is).

    Args:
        features: ``(N, ...)`` representations ``f(x)``.
        derivatives: ``(N, ...)`` their Lie derivatives, e.g. from :class:`~lightning_invariance.LieProbe`.
        normalize: divide each sample's derivative norm by its representation's norm.

    Example:
        >>> import torch
        >>> features, derivatives = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
        >>> lie_derivative(features, derivatives), lie_derivative(features, derivatives, normalize=True)
        (tensor(0.5000, dtype=torch.float64), tensor(0.1000, dtype=torch.float64))
    """
    derivative_norms, feature_norms = _lie_update(features, derivatives)
    if not normalize:
        return derivative_norms.mean()
    nonzero = feature_norms > 0
    return (derivative_norms[nonzero] / feature_norms[nonzero]).mean()
