"""The sparse engine: masks, which parameters are prunable, enforcement, pruning rules.

It knows nothing of procedures (lottery, prune-at-init...); they compose these parts.
"""
from .masks import Masks, keep_count
from .prunable import prunable_names
from .pruning import prune, scores_magnitude
from .sparsifier import Sparsifier

__all__ = ["Masks", "keep_count", "prunable_names", "prune", "scores_magnitude", "Sparsifier"]
