"""Real sparse execution: inference export (measured per-layer format), compact files, and
SparseLinear for training with only the active weights. See docs/performance.md."""
from .exporter import FORMATS, export_model, summary, time_interleaved
from .io import load_exported, save_exported
from .kernels import BsrLinear, CsrLinear, RowsLinear
from ..sparse.sparse_linear import SparseLinear

__all__ = ["FORMATS", "BsrLinear", "CsrLinear", "RowsLinear", "SparseLinear", "export_model",
           "load_exported", "save_exported", "summary", "time_interleaved"]
