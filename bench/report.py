"""``python -m bench.report``: the command's home is :mod:`bench.reporting.report`; this entry point keeps its name."""

from bench.reporting.report import main

if __name__ == "__main__":
    raise SystemExit(main())
