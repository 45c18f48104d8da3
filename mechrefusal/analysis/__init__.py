"""Analyses of found directions and trained checkpoints: causal independence, projections, and the
report with its figures. Above the direction finders; the `analyze` job runs them."""
