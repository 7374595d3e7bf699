"""report stage (in progress)."""
