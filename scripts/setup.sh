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

# pip, quiet: its output is shown only on failure, less the notes this machine's local index prints
pip_install() {
  local log
  log=$(mktemp)
  if .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    rm -f "$log"
  else
    grep -v 'is ignored: it is neither a file nor a directory' "$log" >&2 || true
    rm -f "$log"
    echo "setup: pip install $* failed" >&2
    return 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.risclip-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing $TORCH_SPEC $TORCHVISION_SPEC and risclip-bench[dev] into .venv" >&2
  pip_install "$TORCH_SPEC" "$TORCHVISION_SPEC"
  pip_install -e ".[dev]"
  echo "$want" > "$stamp"
fi
