"""Data: synthetic LGG-like generator, kaggle_3m reader, patient split and prepared arrays."""
