"""jackpot: sparse neural-network training research (lottery tickets, pruning at initialisation,
dynamic sparse training) as one library and command.

Importing the package registers every procedure (jackpot.procedures), so that configs of any
kind validate and hash wherever they are read."""
__version__ = "0.1.0"

from . import procedures  # noqa: E402,F401  (each procedure module registers its kind)
