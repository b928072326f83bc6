#!/usr/bin/env bash
# One-time, idempotent set-up: a single virtual environment (.venv) for tests, benchmarks and the
# ladder. torch and torchvision are installed first, pinned to the builds that lie on this machine's
# disk (override with TORCH_SPEC / TORCHVISION_SPEC elsewhere), so that installing the project never
# pulls a second torch. Re-running is instant unless pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.risclip-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing $TORCH_SPEC $TORCHVISION_SPEC and risclip-bench[dev] into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC" "$TORCHVISION_SPEC"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
