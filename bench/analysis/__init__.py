"""Analysis of stored runs: summaries now; statistics and comparisons build on these."""
