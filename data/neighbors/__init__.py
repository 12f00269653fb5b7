"""Neighbours: the kNN backends and the kNN file."""
