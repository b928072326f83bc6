"""``python -m bench.pretrain_clip``: the command's home is :mod:`bench.proxy.pretrain_clip`; this entry point keeps its name."""

from bench.proxy.pretrain_clip import main

if __name__ == "__main__":
    raise SystemExit(main())
