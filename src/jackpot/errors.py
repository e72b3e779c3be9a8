"""The one exception type the CLI turns into a single clear line and a non-zero exit, and the
one range check of densities and fractions that config, CLI, data and engine all refuse with."""
from __future__ import annotations

import numbers


class JackpotError(Exception):
    """A problem with the user's input or files (bad name, bad density, corrupt file...).

    The message must name the problem in one line; the CLI prints it without a traceback.
    """


def check_fraction(value, name: str, note: str = "") -> None:
    """Refuse `value` unless it is a number in (0, 1] (a density, a fraction of the data), in one
    line: `NAME must be in (0, 1]NOTE, got VALUE`."""
    if not (isinstance(value, numbers.Real) and 0.0 < value <= 1.0):
        shown = value if isinstance(value, numbers.Real) else repr(value)
        raise JackpotError(f"{name} must be in (0, 1]{note}, got {shown}")
