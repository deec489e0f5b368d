"""Networks: DeepLabv3+ exposing the ASPP and decoder maps (``deeplab``); pretraining heads (``heads``)."""

from glcnet.models.deeplab import DeepLab, build_model

__all__ = ["DeepLab", "build_model"]
