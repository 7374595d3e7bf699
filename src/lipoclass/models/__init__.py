"""models stage (in progress)."""
