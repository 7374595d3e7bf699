"""synth stage (in progress)."""
