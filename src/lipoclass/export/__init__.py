"""export stage (in progress)."""
