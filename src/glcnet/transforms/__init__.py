"""Augmentations of self-supervised pretraining: two views of each tile and their geometry.

``geometry`` (crop boxes, flips/rotations, exact view-1 -> view-2 correspondence, ``Views``)
-> ``photometric`` (colour maps, Gaussian blur) -> ``params`` (the random parameters of a
batch, the renderer interface) -> ``render_torch`` / ``render_uint8`` (the two renderers)
-> ``views`` (``ViewGenerator``, ``ViewCollate``).
"""

from glcnet.transforms.geometry import Views, map_points
from glcnet.transforms.views import ViewCollate, ViewGenerator

__all__ = ["ViewCollate", "ViewGenerator", "Views", "map_points"]
