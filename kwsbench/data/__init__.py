"""Datasets, audio decoding, caching, features and augmentation."""
