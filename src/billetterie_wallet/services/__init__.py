"""The wallet's use cases; each owns its transaction and takes ``now`` from the caller."""
