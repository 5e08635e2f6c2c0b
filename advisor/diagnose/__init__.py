"""Deciding: the evidence model, the declared table of causes, and the changes that address them.
"""
