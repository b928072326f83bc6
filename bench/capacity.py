"""``python -m bench.capacity``: the command's home is :mod:`bench.spine.capacity`; this entry point names it."""

from bench.spine.capacity import main

if __name__ == "__main__":
    raise SystemExit(main())
