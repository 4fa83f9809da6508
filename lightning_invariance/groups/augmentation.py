"""Turn any random augmentation into a repeatable family of transformations."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lightning_invariance._checks import check_positive
from lightning_invariance._rng import cuda_indices, fork_rng
from lightning_invariance.groups.base import Group

__all__ = ["AugmentationFamily"]


class AugmentationFamily(Group):
    """A callable augmentation made repeatable: element ``k`` is ``fn`` run with every RNG seeded by ``(seed, k)``.

    Element 0 is the identity (``fn`` is not called). For ``k >= 1``, ``fn(x)`` runs inside a fork of torch's,
    Python's and (if installed) NumPy's global RNGs, seeded from ``seed`` and ``k``; the caller's RNG states are
    restored afterwards, so measuring never shifts the training's random streams, and the same element gives the
    same result on the same batch every epoch. If ``fn`` draws one parameter per sample, the result for a sample
    depends on its position in the batch: keep the measured batches fixed (the callback does).

    Args:
        fn: a callable from a batch ``(N, ...)`` to a batch of the same shape.
        num_elements: how many elements, identity included.
        seed: base seed.
        name: prefix of the element names (``aug1``, ``aug2``, ...).

    Example:
        >>> import torch
        >>> family = AugmentationFamily(lambda x: x + torch.randn_like(x), num_elements=3)
        >>> x = torch.zeros(2, 3)
        >>> state = torch.get_rng_state()
        >>> torch.equal(family.act(x, 1), family.act(x, 1)), torch.equal(torch.get_rng_state(), state)
        (True, True)
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], num_elements: int, seed: int = 0, name: str = "aug") -> None:
        if not callable(fn):
            raise TypeError(f"Expected argument `fn` of AugmentationFamily to be callable, got {type(fn).__name__}.")
        check_positive("num_elements", num_elements, "AugmentationFamily")
        self.fn, self.seed = fn, int(seed)
        super().__init__(["identity"] + [f"{name}{k}" for k in range(1, num_elements)])

    def _act(self, x: Tensor, k: int) -> Tensor:
        with fork_rng(cuda_indices(x.device), seed=(self.seed * 1_000_003 + k) % (2**32)):
            out = self.fn(x)
        if not isinstance(out, Tensor):
            raise TypeError(f"The augmentation of {self!r} returned {type(out).__name__}, expected a torch.Tensor.")
        return out

    def __repr__(self) -> str:
        return f"AugmentationFamily({getattr(self.fn, '__name__', type(self.fn).__name__)}, num_elements={len(self)})"
