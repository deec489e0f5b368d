"""glcnet: GLCNet self-supervised pretraining and few-label segmentation of remote-sensing scenes.

Pipeline, top to bottom: ``data`` (readers, prepare, splits, tiles) -> ``transforms`` (two
augmented views and their geometry) -> ``models`` (DeepLabv3+, heads) -> ``losses`` -> ``ssl``
(one module per pretraining method, one registry) -> ``finetune`` (task, metrics, sliding
window, predict) -> ``experiment`` (comparison grid, demo) -> ``cli``.
"""

__version__ = "0.1.0"
