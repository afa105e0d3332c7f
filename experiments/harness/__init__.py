"""What the entry points run that is not part of the library: the soak test of resuming and
the benchmarks."""
