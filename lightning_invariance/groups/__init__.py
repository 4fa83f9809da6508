"""Transformations of inputs (groups and seeded families) and actions of them on representations."""

from lightning_invariance.groups.actions import (
    MatrixAction,
    RegularAction,
    RepresentationAction,
    SpatialAction,
    TrivialAction,
    VectorAction,
)
from lightning_invariance.groups.augmentation import AugmentationFamily
from lightning_invariance.groups.base import Group
from lightning_invariance.groups.continuous import ContinuousRotation, Scaling
from lightning_invariance.groups.euclidean3d import CubeRotations, Euclidean3D, RigidMotions, Rotation3D, Translation3D
from lightning_invariance.groups.fields import FieldGroup
from lightning_invariance.groups.graphs import GraphPermutation
from lightning_invariance.groups.image import CyclicRotation, CyclicTranslation, Dihedral, Flip
from lightning_invariance.groups.permutation import Permutation

__all__ = [
    "AugmentationFamily",
    "ContinuousRotation",
    "CubeRotations",
    "CyclicRotation",
    "CyclicTranslation",
    "Dihedral",
    "Euclidean3D",
    "FieldGroup",
    "Flip",
    "GraphPermutation",
    "Group",
    "MatrixAction",
    "Permutation",
    "RegularAction",
    "RepresentationAction",
    "RigidMotions",
    "Rotation3D",
    "Scaling",
    "SpatialAction",
    "Translation3D",
    "TrivialAction",
    "VectorAction",
]
