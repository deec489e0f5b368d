"""Data layer: readers, formats, ``prepare``, splits, the prepared-folder reader, views.

``raster`` (GeoTIFF/PNG/JPEG readers, ``scale``) -> ``formats`` (one class per data set:
classes, colours, bands, mask decoding) -> ``splits`` (scene splits, tile windows,
nested labelled subsets) -> ``prepare`` (raw folder -> prepared folder, see
docs/design.md) -> ``prepared`` (``PreparedDataset``, ``TileDataset``, ``SceneDataset``)
-> ``views`` (two augmented views for pretraining).
"""
