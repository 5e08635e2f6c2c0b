"""Errors the collector raises for bad kernel input; each names the file (and line) it came from."""


class ParseError(ValueError):
    """A kernel file or message did not have the shape we expect."""

    def __init__(self, source, message, line=None):
        self.source = source
        self.line = line
        where = source if line is None else "{0}, line {1}".format(source, line)
        super().__init__("{0}: {1}".format(where, message))
