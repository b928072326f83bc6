"""Cost measurement: FLOPs, parameters, latency and memory of a variant (the benchmark suite and the harness share it)."""
