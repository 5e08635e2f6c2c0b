"""Writing to the host: the plan of changes, runtime settings, persistence, snapshots for
rollback, and verification.
"""
