"""``python -m bench.budget``: the command's home is :mod:`bench.experiments.budget`; this entry point keeps its name."""

from bench.experiments.budget import main

if __name__ == "__main__":
    raise SystemExit(main())
