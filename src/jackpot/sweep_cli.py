"""`jackpot sweep` and `jackpot report` (filled in by the sweep work)."""


def register(sub) -> None:
    """Add the sweep/report subcommands to the `jackpot` parser."""
