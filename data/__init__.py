"""Datasets, text preprocessing and the files the pipeline's scripts exchange."""
