"""Loss modules of the pretraining methods (each docstring states its formula)."""

from glcnet.losses.collapse import embedding_std
from glcnet.losses.false_negatives import false_negatives
from glcnet.losses.local import LocalMatchingLoss, pool_patches
from glcnet.losses.masked_mse import MaskedMSELoss
from glcnet.losses.moco import MoCoInfoNCE
from glcnet.losses.ntxent import NTXentLoss
from glcnet.losses.style import style_vector
from glcnet.losses.vicregl import VICRegLLoss

__all__ = [
           "LocalMatchingLoss",
           "MaskedMSELoss",
           "MoCoInfoNCE",
           "NTXentLoss",
           "VICRegLLoss",
           "embedding_std",
           "false_negatives",
           "pool_patches",
           "style_vector",
]
