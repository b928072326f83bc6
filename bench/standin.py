"""``python -m bench.standin``: the command's home is :mod:`bench.proxy.standin`; this entry point keeps its name."""

from bench.proxy.standin import main

if __name__ == "__main__":
    raise SystemExit(main())
