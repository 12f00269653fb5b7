"""Plumbing every layer shares: the input error, regular-file checks, the work folder's files, the worker pool and process signals."""
