"""The curriculum's experiments, one module each (NAME, DESCRIPTION, run, summary, plot)."""
