"""``python -m bench.services``: the command's home is :mod:`bench.infra.services`; this entry point keeps its name."""

from bench.infra.services import main

if __name__ == "__main__":
    raise SystemExit(main())
