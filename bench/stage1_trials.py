"""``python -m bench.stage1_trials``: the command's home is :mod:`bench.experiments.stage1_trials`; this entry point keeps its name."""

from bench.experiments.stage1_trials import main

if __name__ == "__main__":
    raise SystemExit(main())
