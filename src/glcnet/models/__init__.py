from glcnet.models.deeplab import DeepLab, build_model

__all__ = ["DeepLab", "build_model"]
