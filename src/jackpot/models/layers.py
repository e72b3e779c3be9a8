"""The layer types that carry the weights jackpot prunes, initialises (--init) and counts FLOPs of:
plain conv and linear modules (every model of the zoo builds its weight layers from these)."""
from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
