"""Fixtures for the redis server (filled in by its owner)."""
