"""``python -m bench``: every command of the harness, one line each (home: :mod:`bench.infra.commands`)."""

from bench.infra.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
