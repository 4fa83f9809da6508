"""Fitted linear equivariance (Lenc & Vedaldi, CVPR 2015): is there a linear map ``M_g`` with ``f(g.x) ~ M_g f(x)``?

For a layer whose action of the group is unknown (a plain CNN trained with augmentation), one affine map per group
element is fitted by ridge regression on a fitting set, and the G-EED of ``f(g.x)`` against ``M_g f(x)`` is
measured on held-out inputs. A layer can be equivariant without being invariant (the maps fit, ``M_g != I``) or
neither (no map fits). Only the sums ``X^T X`` and ``X^T Y`` are kept, so the fit reduces by a sum across processes.

What is fitted: features are made small first. Feature maps ``(C, H, W)`` are average-pooled to ``(C, p, p)``
(``pool_size=p``), sequences ``(C, L)`` to ``(C, p)``, volumes to ``(C, p, p, p)``; vectors stay as they are. The
result is flattened and, when more than ``max_features`` values remain, projected to ``max_features`` by a fixed
Gaussian matrix (seeded: the same in every process and epoch).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_invariance._checks import check_orbit_features
from lightning_invariance._sync import sample_blocks
from lightning_invariance.functional.deviation import NAN_STRATEGIES, drop_non_finite
from lightning_invariance.functional.distances import check_choice
from lightning_invariance.functional.normalizer import DEFAULT_NORMALIZER_WINDOW, window_pair_sums

__all__ = ["fit_linear_maps", "linear_equivariance_deviation", "pooled_orbit"]

#: Ridge strength, relative to the mean squared feature value (the mean of the diagonal of ``X^T X / N``).
DEFAULT_RIDGE = 1e-3


def pooled_orbit(orbit_features: Tensor, pool_size: int = 2, max_features: int = 256, seed: int = 0) -> Tensor:
    """``(|G|, N, F)`` float64 pooled (and, when wide, projected) features of orbit features ``(|G|, N, ...)``."""
    check_orbit_features(orbit_features)
    if orbit_features.is_complex():
        orbit_features = torch.view_as_real(orbit_features).movedim(-1, 2).flatten(2, 3)  # real, imaginary channels
    blocks = [  # a float64 copy of a block at a time: pooling is per sample
        _pooled(orbit_features[:, block], pool_size) for block in sample_blocks(orbit_features, share=2)
    ]
    flat = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
    if flat.shape[-1] > max_features:
        flat = flat @ _projection(flat.shape[-1], max_features, seed, flat.device)
    return flat


def _pooled(orbit_features: Tensor, pool_size: int) -> Tensor:
    """``(|G|, n, P)`` float64 pooled features of real orbit features ``(|G|, n, ...)``."""
    num_elements, num_samples = orbit_features.shape[:2]
    values = orbit_features.to(torch.float64).flatten(0, 1)
    if values.ndim == 1:
        values = values.unsqueeze(-1)
    elif values.ndim == 3:
        values = F.adaptive_avg_pool1d(values, pool_size)
    elif values.ndim == 4:
        values = F.adaptive_avg_pool2d(values, pool_size)
    elif values.ndim > 4:
        values = F.adaptive_avg_pool3d(values.flatten(1, -4), pool_size)
    flat = values.flatten(1)
    return flat.reshape(num_elements, num_samples, flat.shape[-1])


@functools.lru_cache(maxsize=32)
def _projection(width: int, max_features: int, seed: int, device: torch.device) -> Tensor:
    """The fixed ``(width, max_features)`` Gaussian projection on ``device``, drawn on the CPU once per shape.

    Cached per device too: copying it to an accelerator on every update would make the host wait each time.
    """
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(width, max_features, generator=generator, dtype=torch.float64)
    return (projection / math.sqrt(max_features)).to(device)


def _design(identity_features: Tensor) -> Tensor:
    """``[f(x), 1]``: the regressors, with a bias column."""
    return torch.cat([identity_features, identity_features.new_ones(identity_features.shape[0], 1)], dim=1)


def _linear_fit_update(pooled: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``X^T X`` ``(F+1, F+1)`` and ``X^T Y_g`` ``(|G|, F+1, F)`` of one batch of pooled orbit features.

    ``keep`` ``(N,)``: only these samples are summed (the others' rows are zeroed on the device, NaN included, so
    the sums equal those of the kept samples alone without a data-dependent shape).
    """
    if keep is not None:
        pooled = torch.where(keep.unsqueeze(-1), pooled, 0.0)
    design = _design(pooled[0])
    if keep is not None:
        design[:, -1] = keep
    return design.T @ design, torch.einsum("nf,gnd->gfd", design, pooled)


def fit_linear_maps(xtx: Tensor, xty: Tensor, num_samples: float, ridge: float = DEFAULT_RIDGE) -> Tensor:
    """Ridge solutions ``M_g`` ``(|G|, F+1, F)`` of ``f(g.x) ~ [f(x), 1] M_g`` from the accumulated sums.

    The penalty ``ridge * mean(diag(X^T X)[:F]) / N`` (relative to the mean squared feature value, so it does not
    depend on the features' scale) applies to the weights, not to the bias row.
    """
    if num_samples < 1:
        raise ValueError("Cannot fit the linear maps: no fitting samples were seen. Update the metric before fit().")
    width = xtx.shape[0] - 1
    scale = float(torch.diagonal(xtx)[:width].mean()) / num_samples if width else 0.0
    penalty = ridge * (scale if scale > 0 else 1.0) * num_samples
    regularised = xtx.clone()
    regularised.diagonal()[:width] += penalty
    if penalty == 0:
        return torch.linalg.lstsq(regularised.expand(xty.shape[0], -1, -1), xty).solution
    return torch.linalg.solve(regularised, xty)


def _linear_evaluate(pooled: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
    """``(|G|, N)`` distances ``||f(g.x) - M_g f(x)||`` and, for comparison, ``||f(g.x) - f(x)||``."""
    predicted = torch.einsum("nf,gfd->gnd", _design(pooled[0]), maps)
    return (pooled - predicted).norm(dim=-1), (pooled - pooled[:1]).norm(dim=-1)


def linear_equivariance_deviation(
    fit_orbit_features: Tensor,
    eval_orbit_features: Tensor,
    ridge: float = DEFAULT_RIDGE,
    normalize: bool = False,
    pool_size: int = 2,
    max_features: int = 256,
    seed: int = 0,
    normalizer_window: int = DEFAULT_NORMALIZER_WINDOW,
    nan_strategy: str = "error",
) -> Tensor:
    r"""Held-out G-EED of ``f(g.x)`` against the fitted ``M_g f(x)`` (Lenc & Vedaldi 2015).

    .. math::
        M_g = \arg\min_M \sum_{x \in D_{fit}} \| f(g.x) - M [f(x); 1] \|^2 + \lambda \|W\|^2, \qquad
        \frac{1}{|D_{eval}|\,|G|} \sum_{x \in D_{eval}} \sum_g \| f(g.x) - M_g [f(x); 1] \|_2

    on pooled features (see the module docstring), divided with ``normalize=True`` by the mean distance between
    different held-out inputs' pooled features (0: a linear map explains every transformation; 1: it explains
    nothing more than swapping the input would).

    Args:
        fit_orbit_features: ``(|G|, N_fit, ...)`` orbit features to fit the maps on (identity first).
        eval_orbit_features: ``(|G|, N_eval, ...)`` held-out orbit features.
        ridge: penalty relative to the mean squared feature value.
        normalize: divide by the mean pair distance of the held-out inputs.
        pool_size: feature maps are average-pooled to ``pool_size`` per spatial axis.
        max_features: wider pooled features are projected to this many by a fixed Gaussian matrix.
        seed: seed of that projection.
        normalizer_window: the normaliser's pairs, as in :func:`~lightning_invariance.functional.invariance_deviation`.
        nan_strategy: ``"error"`` on NaN/inf features (fitting or held out), or ``"skip"`` such samples with a
            warning.

    Example:
        >>> import torch
        >>> from lightning_invariance.groups import Permutation
        >>> group = Permutation(dim=1, num_elements=3)  # permuting the features is linear: M_g is a permutation
        >>> fit, held_out = group.orbit(torch.randn(50, 6)), group.orbit(torch.randn(20, 6))
        >>> bool(linear_equivariance_deviation(fit, held_out, ridge=1e-9, normalize=True) < 1e-6)
        True
    """
    check_choice("nan_strategy", nan_strategy, NAN_STRATEGIES)
    fit, _, _ = drop_non_finite(pooled_orbit(fit_orbit_features, pool_size, max_features, seed), nan_strategy)
    held_out, _, _ = drop_non_finite(pooled_orbit(eval_orbit_features, pool_size, max_features, seed), nan_strategy)
    xtx, xty = _linear_fit_update(fit)
    maps = fit_linear_maps(xtx, xty, fit.shape[1], ridge)
    distances, _ = _linear_evaluate(held_out, maps)
    geed = distances.mean()
    if not normalize:
        return geed
    pair_sum, pair_count = window_pair_sums(held_out[0], "euclidean", normalizer_window)
    return geed / (pair_sum / pair_count) if pair_count else geed * float("nan")
