"""``python -m bench.diagnose``: the command's home is :mod:`bench.experiments.diagnose`; this entry point keeps its name."""

from bench.experiments.diagnose import main

if __name__ == "__main__":
    raise SystemExit(main())
