"""Typed configuration, loaded once and passed down (DESIGN.md: may import core only)."""
