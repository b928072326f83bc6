"""``python -m bench.stage1_trials``: the command's home is :mod:`bench.reporting.stage1_trials`; this entry point keeps its name."""

from bench.reporting.stage1_trials import main

if __name__ == "__main__":
    raise SystemExit(main())
