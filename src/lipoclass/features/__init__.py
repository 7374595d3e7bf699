"""features stage (in progress)."""
