"""The matcher service: face events in, watchlist alerts out."""
