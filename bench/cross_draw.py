"""``python -m bench.cross_draw``: the command's home is :mod:`bench.experiments.cross_draw`."""

from bench.experiments.cross_draw import main

if __name__ == "__main__":
    raise SystemExit(main())
