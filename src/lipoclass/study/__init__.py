"""study stage (in progress)."""
