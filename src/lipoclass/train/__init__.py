"""train stage (in progress)."""
