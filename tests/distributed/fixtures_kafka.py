"""Fixtures for the kafka server (filled in by its owner)."""
