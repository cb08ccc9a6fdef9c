"""Datasets (docs/DESIGN.md, "Data layouts"): Cambridge Landmarks, 7-Scenes, MIT-67 and a generic pose CSV, with the
paper's preprocessing. Entry point: :func:`open_dataset`."""
from .dataset import FORMATS, DataFormat, data_format, ImageDataset, fit_normalization, open_dataset, read_records, split_validation
from .images import load_image, rgb_tensor
from .records import DataError, Records

__all__ = ["open_dataset", "read_records", "split_validation", "fit_normalization", "ImageDataset", "FORMATS",
           "DataFormat", "data_format", "load_image", "rgb_tensor", "DataError", "Records"]
