"""Dataset spec, reading, validation, splits, augmentation views, loaders and the sample dataset."""
