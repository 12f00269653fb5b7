"""Datasets, text, neighbours and images: what the pipeline reads and the files its scripts exchange."""
