"""Fixtures for the triton server (filled in by its owner)."""
