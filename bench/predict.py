"""``python -m bench.predict``: the command's home is :mod:`bench.spine.serving`; this entry point names it."""

from bench.spine.serving import main

if __name__ == "__main__":
    raise SystemExit(main())
