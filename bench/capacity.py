"""``python -m bench.capacity``: the command's home is :mod:`bench.reporting.capacity`; this entry point names it."""

from bench.reporting.capacity import main

if __name__ == "__main__":
    raise SystemExit(main())
