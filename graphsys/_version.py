"""The package version, in a bottom module so that any layer can record it (the dataset
writer stamps it in manifests) without importing the top-level package."""

__version__ = "0.1.0"
