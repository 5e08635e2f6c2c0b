"""netdrops collector core: the kernel's receive-path drop counters, read cheaply.

Standard library only: this package runs inside Netdata's own interpreter (python.d.plugin)
as well as in the standalone external plugin.
"""

__version__ = "0.1.0"
