"""The harness spine: presets, data and backbone assets, tracking, one variant's training and scoring, baselines, the reference, and bench.ablate."""
