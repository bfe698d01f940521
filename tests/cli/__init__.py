"""The command line: happy paths and user errors (exit 2, one line, no traceback)."""
