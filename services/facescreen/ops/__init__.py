"""What every long-running service shares: health endpoints, metrics and JSON logs."""
