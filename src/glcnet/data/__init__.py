"""Data layer: readers, formats, ``prepare``, splits, the prepared-folder reader.

``raster`` (GeoTIFF/PNG/JPEG readers, ``scale``) -> ``formats`` (one class per data set:
classes, colours, bands, mask decoding) -> ``splits`` (scene splits, tile windows,
nested labelled subsets) -> ``prepare`` (raw folder -> prepared folder, see
docs/design.md) -> ``prepared`` (``PreparedDataset``, ``TileDataset``, ``SceneDataset``).
The augmented views of pretraining are in :mod:`glcnet.transforms`.
"""
