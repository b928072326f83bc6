"""``python -m bench.benchmark_report``: the command's home is :mod:`bench.reporting.benchmark_report`; this entry point keeps its name."""

from bench.reporting.benchmark_report import main

if __name__ == "__main__":
    raise SystemExit(main())
