"""The long-running parts of the daemon."""
