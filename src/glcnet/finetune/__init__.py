"""Fine-tuning, whole-scene evaluation and georeferenced prediction.

``weights`` (load pretrained parts, model.pt I/O) -> ``task`` (LightningModule) -> ``train``
(``glcnet finetune``) -> ``sliding`` (blended sliding window, streamed) -> ``metrics``
(pooled confusion matrix) -> ``report`` -> ``evaluate`` (``glcnet evaluate``) and
``predict`` (``glcnet predict``). Modules are imported on use, so this package is light.
"""
