"""Rendering: reports from JSON and tracked MLflow runs (the ladder report, its MLflow queries, bootstrap CIs,
learning curves, the benchmark report, the reports index). Nothing here trains a model: experiments that do
live in :mod:`bench.experiments`."""
