"""The event bus: topic configuration, message codecs, entry validation, dead letters.

Everything that knows how facescreen messages look on Kafka lives here, so the ingest,
analyzer and matcher services stay thin loops around the core.
"""
