"""Where evidence comes from: a Netdata agent's API, the kernel sampled with the collector's core,
and host facts (tuning, sockets, CPU use).
"""
