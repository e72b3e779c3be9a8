"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class JackpotError(Exception):
    """A problem with the user's input or files (bad name, bad density, corrupt file...).

    The message must name the problem in one line; the CLI prints it without a traceback.
    """
