"""evaluate stage (in progress)."""
