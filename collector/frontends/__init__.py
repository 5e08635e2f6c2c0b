"""What publishes the tick: Netdata's external-plugin protocol and its Functions, and the
OpenMetrics exporter.
"""
