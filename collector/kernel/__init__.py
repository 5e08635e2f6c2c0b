"""The kernel's receive-path sources: one module per /proc, /sys or netlink source, each a pure
parser and a thin reader that takes a host prefix.
"""
