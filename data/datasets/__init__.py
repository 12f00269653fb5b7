"""Datasets: the item type, the readers of each format, loading from flags and provenance."""
