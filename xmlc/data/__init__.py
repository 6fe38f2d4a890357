"""The data stage: the container, the readers (XMC, tables, feature matrices), the featuriser,
synthetic data, the stratified split, the loader, and ``load_splits`` above them.
Imports only ``xmlc.errors`` from the rest of xmlc; this file only re-exports.
"""

from xmlc.data import tables
from xmlc.data.container import XMCData, check_labelled, concat_data, normalize_rows
from xmlc.data.load import check_splits, load_splits, load_text_splits, read_data, read_for_model
from xmlc.data.loader import EVAL_BATCH_SIZE, Batch, DeviceLoader, SparseDataset, collate_batches, make_loader
from xmlc.data.split import stratified_split
from xmlc.data.synthetic import SYNTHETIC_PRESETS, synthetic, synthetic_preset
from xmlc.data.xmc import read_xmc, write_xmc
from xmlc.errors import DataFileError, InputError

__all__ = [
    "XMCData", "normalize_rows", "concat_data", "check_labelled",
    "read_xmc", "write_xmc",
    "synthetic", "SYNTHETIC_PRESETS", "synthetic_preset",
    "Batch", "DeviceLoader", "SparseDataset", "collate_batches", "make_loader", "EVAL_BATCH_SIZE",
    "stratified_split",
    "load_splits", "check_splits", "read_data", "load_text_splits", "read_for_model",
    "tables", "DataFileError", "InputError",
]
