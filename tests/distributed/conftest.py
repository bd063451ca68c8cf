"""The distributed tests' servers come from the rootdir conftest (one of each per session)."""
