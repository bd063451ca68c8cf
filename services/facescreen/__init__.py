"""facescreen: streaming face screening against watchlists, for human review."""

__version__ = "0.1.0"
