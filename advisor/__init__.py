"""netdrops-advisor: from receive-path drop measurements to a diagnosis and a recommendation.

Evidence comes from a Netdata agent (the netdrops.* charts, or Netdata's own softnet and
interface charts), through a parent for any child node, or from the kernel itself sampled over
a window with the collector's core. The diagnosis is a declared table of causes
(diagnosis.CAUSES); each cause names the changes that address it (recommend.REMEDIES).
"""

__version__ = "0.1.0"
