"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class GlcnetError(Exception):
    """A problem with the user's input (file, config, checkpoint), stated in one line.

    Messages name the offending file or option and the problem, e.g.
    ``"data/a.tif: mask is 500x500 but image is 512x512"``.
    """
