"""``python -m bench.ablate``: the command's home is :mod:`bench.spine.ablate`; this entry point keeps its name."""

from bench.spine.ablate import main

if __name__ == "__main__":
    raise SystemExit(main())
