"""Wrap-safe counters, in one place.

Kernel counters wrap (softnet_stat at 2^32) or reset (an interface re-created under the same
index). A Counter turns successive raw readings into a monotonic 64-bit-style total, so every
consumer (Netdata incremental dimensions, OpenMetrics `_total`, the advisor's windows) sees one
clean series.
"""

WRAP32 = 1 << 32
WRAP64 = 1 << 64


class MonotonicCounter:
    __slots__ = ("width", "raw", "total")

    def __init__(self, raw, width=WRAP32):
        self.width = width
        self.raw = raw
        self.total = 0

    def update(self, raw):
        """Feed the next raw reading; returns the delta since the previous one (modulo the width)."""
        delta = (raw - self.raw) % self.width
        self.raw = raw
        self.total += delta
        return delta
