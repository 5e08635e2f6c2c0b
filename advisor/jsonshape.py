"""Checks of decoded JSON (Netdata's answers, the --apply snapshot) before its values are used.

Each raises TypeError naming what is wrong; the reader turns that into one sentence. A text or
an object where a list belongs would otherwise iterate (by character, by key) into records that
look right.
"""

import math


def require_dict(doc, what):
    if not isinstance(doc, dict):
        raise TypeError("{0} is a {1}, not an object".format(what, type(doc).__name__))
    return doc


def require_list(doc, what):
    if not isinstance(doc, list):
        raise TypeError("{0} is a {1}, not a list".format(what, type(doc).__name__))
    return doc


def finite_number(value):
    """True for an int or float that is finite: not a bool (True is an int), not inf (1e999
    decodes to it), not an int beyond float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
