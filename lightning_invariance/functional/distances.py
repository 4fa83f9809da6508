"""Distances between representations, and the spaces they are taken in (flattened features, log-probs, labels)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from lightning_invariance._matmul_precision import full_float32_matmul
from lightning_invariance._sync import branches_on_host

__all__ = [
    "DISTANCES",
    "REFERENCES",
    "check_choice",
    "exact_arithmetic",
    "largest_magnitude",
    "most_frequent",
    "orbit_reference",
    "per_sample_distance",
    "power_of_two_scale",
    "row_scales",
    "to_distance_space",
    "unit_rows",
]

DISTANCES = ("euclidean", "cosine", "kl", "discrete")
#: Float32 norms below this may have lost squares to underflow; they are recomputed from rows scaled by a power of 2.
_DOUBTFUL_NORM = 2.0**-60
_LARGEST_FLOAT64 = torch.finfo(torch.float64).max
REFERENCES = ("centroid", "identity")


@contextlib.contextmanager
def exact_arithmetic(device_type: str) -> Iterator[None]:
    """Run the measuring arithmetic as defined, whatever the caller set.

    Autocast is off, and float32 matrix products run in full float32 (no TF32 or bf16 passes, which
    ``torch.set_float32_matmul_precision("high")`` or ``"medium"`` and PyTorch's per-backend settings allow, so a global
    setting cannot move a score: :func:`~lightning_invariance._matmul_precision.full_float32_matmul`). The caller's
    settings are restored on the way out, also on error; the model's own forward passes run outside this and keep them.
    """
    with full_float32_matmul(), torch.autocast(device_type, enabled=False):
        yield


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise the torchmetrics-style error for a string argument outside ``allowed``."""
    if value not in allowed:
        raise ValueError(f"Expected argument `{name}` to be one of {allowed} but got {value!r}.")


def to_distance_space(features: Tensor, distance: str, apply_softmax: bool) -> Tensor:
    """Map ``(..., N, *feature_dims)`` features to where ``distance`` compares them.

    - euclidean / cosine: features flattened per sample, ``(..., N, D)``, in float32 or wider: float16 and bfloat16
      features are widened to float32, integers to float64, and complex features are compared as real vectors of
      twice the width (their real and imaginary parts);
    - kl: log-probabilities ``(..., N, C)`` (``log_softmax`` of logits, or the log of given probabilities);
    - discrete: integer labels ``(..., N)``: the argmax of ``(..., N, C)`` scores, or given integer labels.

    ``features`` has two leading axes (the orbit axis and the sample axis).
    """
    if distance in ("euclidean", "cosine"):
        if features.is_complex():
            features = torch.view_as_real(features)
        flat = features.flatten(2)
        if not flat.is_floating_point():
            return flat.to(torch.float64)
        return flat if flat.element_size() >= 4 else flat.to(torch.float32)
    if distance == "kl":
        if features.ndim != 3 or not features.is_floating_point():
            raise ValueError(
                "distance='kl' compares class distributions: expected float features of shape (|G|, N, C) (logits, "
                f"or probabilities with apply_softmax=False), but got dtype {features.dtype} and shape "
                f"{tuple(features.shape)}."
            )
        if apply_softmax:  # float64: KL of near-equal distributions is second order, float32 logs are not
            return torch.log_softmax(features.to(torch.float64), dim=-1)
        sums = features.sum(-1)
        if bool((features < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise ValueError(
                "distance='kl' with apply_softmax=False expects probabilities (non-negative, summing to 1 over the "
                f"last axis); got values in [{features.min().item():.4g}, {features.max().item():.4g}] with sums in "
                f"[{sums.min().item():.4g}, {sums.max().item():.4g}]. Pass logits with apply_softmax=True instead."
            )
        return torch.log(features.to(torch.float64))
    if distance == "discrete":
        if features.ndim == 2 and not features.is_floating_point() and not features.is_complex():
            return features
        if features.ndim == 3 and features.is_floating_point():
            return features.argmax(dim=-1)
        raise ValueError(
            "distance='discrete' compares predicted labels: expected integer labels of shape (|G|, N) or float class "
            f"scores of shape (|G|, N, C), but got dtype {features.dtype} and shape {tuple(features.shape)}."
        )
    check_choice("distance", distance, DISTANCES)
    raise AssertionError("unreachable")


def orbit_reference(space: Tensor, distance: str, reference: str) -> Tensor:
    """The reference ``r(x)`` each orbit element is compared with, broadcastable against ``space`` ``(|G|, N, ...)``.

    ``"identity"`` is element 0. ``"centroid"`` is the orbit mean: of the features, of the probabilities (for
    ``kl``: returned as log-probabilities), or the most frequent label (for ``discrete``; ties go to the smallest).
    """
    if reference == "identity":
        return space[:1]
    check_choice("reference", reference, REFERENCES)
    if distance == "kl":
        return (torch.logsumexp(space, dim=0) - math.log(space.shape[0])).unsqueeze(0)
    if distance == "discrete":
        return most_frequent(space)
    return space.mean(dim=0, keepdim=True)


def most_frequent(labels: Tensor) -> Tensor:
    """``(1, N)``: the most frequent of the labels ``(|G|, N)`` along axis 0, ties going to the smallest.

    Each element's label is compared with every other's (``|G|^2 N`` comparisons on the device). ``torch.mode`` does
    not say which label it returns among ties, and deterministic mode refuses it on CUDA.
    """
    counts = (labels.unsqueeze(0) == labels.unsqueeze(1)).sum(dim=1)  # how often each element's label occurs
    candidates = counts == counts.amax(dim=0, keepdim=True)
    return torch.where(candidates, labels, labels.amax(dim=0, keepdim=True)).amin(dim=0, keepdim=True)


def per_sample_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """``m(a, b)`` over the last axis (none for labels), broadcasting; float64 out.

    cosine: ``1 - cos``; two zero vectors are at distance 0 and a zero and a non-zero vector at distance 1.
    kl: ``KL(p_a || p_b)`` from log-probabilities; terms where ``p_a = 0`` contribute 0.
    Computed with autocast off from inputs in float32 or wider (see :func:`to_distance_space`): a float32 euclidean
    norm that overflowed or may have underflowed is recomputed from the row scaled by a power of two (on accelerators
    every norm is, which gives the same values without a host read or a float64 copy), and cosine scales each vector
    by a power of two (exactly) first, so that no square overflows or underflows.
    """
    if distance == "discrete":
        return (a != b).to(torch.float64)
    with exact_arithmetic(a.device.type):
        return _float_distance(a, b, distance)


def power_of_two_scale(largest: Tensor) -> Tensor:
    """``2^-e`` with ``largest * 2^-e`` in ``[0.5, 1)`` (``largest = m 2^e``), in its dtype; finite and positive.

    Multiplying by a power of two is exact, so scaled values compare, sum and square as the originals would, without
    overflow (float32 features of 1e20) or underflow. The scale is built from the bits of ``largest``'s exponent
    field (three operations, a kernel launch each on a GPU, where ``frexp`` and ``exp2`` took five): the exponent
    field ``E`` of ``largest`` in ``[2^(E - bias), 2^(E - bias + 1))`` gives the scale's field ``2 bias - 1 - E``.
    ``E`` is clamped to the normal range of both: 0 and subnormal values get the scale of the smallest normal value
    (``2^125`` in float32, which keeps them below 1), and values from ``2^126``, inf and NaN (whose field is all
    ones) that of ``2^-126``, so a NaN or inf vector stays NaN or inf.
    """
    integer, mantissa_bits, bias = _float_layout(largest.dtype)
    field = largest.view(integer) & ((2 * bias + 1) << mantissa_bits)  # the exponent field alone
    field = field.clamp(1 << mantissa_bits, (2 * bias - 2) << mantissa_bits)
    return (((2 * bias - 1) << mantissa_bits) - field).view(largest.dtype)


@functools.cache
def _float_layout(dtype: torch.dtype) -> tuple[torch.dtype, int, int]:
    """The integer dtype as wide as the float ``dtype``, its mantissa bits and its exponent bias."""
    info = torch.finfo(dtype)
    integer = {16: torch.int16, 32: torch.int32, 64: torch.int64}[info.bits]
    return integer, round(-math.log2(info.eps)), round(1 - math.log2(info.tiny))


def largest_magnitude(x: Tensor) -> Tensor:
    """``max |x|`` over the last axis, kept as an axis of size 1 (NaN where a vector holds NaN, 0 for empty ones).

    ``vector_norm(x, ord=inf)``: one reduction on accelerators; on the CPU the same values from two plain reductions,
    several times faster there than one over ``abs``.
    """
    if x.numel() == 0:
        return x.new_zeros((*x.shape[:-1], 1))
    if not branches_on_host(x.device):
        return torch.linalg.vector_norm(x, ord=math.inf, dim=-1, keepdim=True)
    return torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg())


def row_scales(rows: Tensor) -> Tensor:
    """Each vector's (last axis) power of two into ``[0.5, 1)``, kept as an axis of size 1, with no gradient.

    :func:`power_of_two_scale` of the vector's :func:`largest_magnitude`.
    """
    return power_of_two_scale(largest_magnitude(rows.detach()))


def unit_rows(x: Tensor) -> Tensor:
    """Vectors on the last axis scaled to unit norm (zero vectors stay zero), without overflow."""
    x = x * row_scales(x)
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _scaled_norm(rows: Tensor) -> Tensor:
    """float64 norms of float32 ``rows`` (last axis), each row scaled in place by a power of two first.

    The scaled row's largest value is in ``[0.5, 1)``, so no float32 square overflows or underflows; scaling by a
    power of two is exact, so a row whose squares do neither gets the plain float32 norm bit for bit (the sums run in
    the same order). A NaN or inf row stays NaN or inf (its exponent is unspecified, the clamp keeps it finite).
    """
    scale = row_scales(rows)
    norm = torch.linalg.vector_norm(rows.mul_(scale), dim=-1).to(torch.float64)
    return norm / scale.squeeze(-1)  # a float64 division, the float32 scale widened (exactly) in the kernel


def _float_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    if distance == "euclidean":
        difference = a - b
        if difference.dtype == torch.float64:
            return torch.linalg.vector_norm(difference, dim=-1)
        if not branches_on_host(difference.device):  # every row scaled: no host read, no float64 copy of the block
            return _scaled_norm(difference)
        norm = torch.linalg.vector_norm(difference, dim=-1).to(torch.float64)
        # float32 squares overflow beyond ~1e19 and vanish below ~1e-19: such rows again, scaled by a power of two
        doubtful = norm.clamp(_DOUBTFUL_NORM, _LARGEST_FLOAT64) != norm  # NaN, inf or tiny (two kernels, not seven)
        if bool(doubtful.any()):
            norm = norm.masked_scatter(doubtful, _scaled_norm(difference[doubtful]))
        return norm
    if distance == "cosine":
        unit_a, unit_b = unit_rows(a), unit_rows(b)
        cos = (unit_a * unit_b).sum(-1).to(torch.float64)
        both_zero = (a == 0).all(-1) & (b == 0).all(-1)
        return torch.where(both_zero, torch.zeros_like(cos), 1.0 - cos.clamp(-1.0, 1.0))
    if distance == "kl":
        a64, b64 = a.to(torch.float64), b.to(torch.float64)
        terms = torch.where(a64 == -math.inf, torch.zeros_like(a64), a64.exp() * (a64 - b64))
        return terms.sum(-1).clamp_min(0.0)
    check_choice("distance", distance, DISTANCES)
    raise AssertionError("unreachable")
