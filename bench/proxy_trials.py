"""``python -m bench.proxy_trials``: the command's home is :mod:`bench.experiments.proxy_trials`; this entry point keeps its name."""

from bench.experiments.proxy_trials import main

if __name__ == "__main__":
    raise SystemExit(main())
