"""explain stage (in progress)."""
