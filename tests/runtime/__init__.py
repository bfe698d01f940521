"""The runtime: the lean import boundary and reliability (errors, threads, Ctrl-C)."""
