"""predict stage (in progress)."""
