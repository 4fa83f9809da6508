"""Transformations of inputs (groups and seeded families) and actions of them on representations."""

from lightning_invariance.groups.actions import RegularAction, RepresentationAction, SpatialAction, TrivialAction
from lightning_invariance.groups.augmentation import AugmentationFamily
from lightning_invariance.groups.base import Group
from lightning_invariance.groups.continuous import ContinuousRotation, Scaling
from lightning_invariance.groups.image import CyclicRotation, CyclicTranslation, Dihedral, Flip
from lightning_invariance.groups.permutation import Permutation

__all__ = [
    "AugmentationFamily",
    "ContinuousRotation",
    "CyclicRotation",
    "CyclicTranslation",
    "Dihedral",
    "Flip",
    "Group",
    "Permutation",
    "RegularAction",
    "RepresentationAction",
    "Scaling",
    "SpatialAction",
    "TrivialAction",
]
