#!/usr/bin/env bash
# Set up everything weightvault and its test suite need on a fresh Debian machine with Python 3.11:
#   * Debian packages: SoftHSM2 + OpenSC (PKCS#11 tests), PostgreSQL (tlog/custody tests), Chromium (browser tests, driven by Playwright: no browser download);
#   * a virtual environment in .venv with weightvault (editable) and all extras for tests.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(softhsm2 opensc postgresql chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the project's requirements changed.
stamp=.venv/.weightvault-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first run takes a few minutes)"
  pip_quiet() {
    # pip -q still prints a warning per missing local index folder; keep real errors only.
    { .venv/bin/python -m pip install -q "$@" 2>&1 || return 1; } | { grep -v '^WARNING: Location' || true; }
  }
  pip_quiet --upgrade pip
  # The CPU build of PyTorch first, so nothing later pulls a multi-GB CUDA build.
  pip_quiet "torch==2.13.0"
  pip_quiet -e ".[test,pkcs11,sigstore,scan,server,tamper,datasets,report,ray]"
  echo "$want" > "$stamp"
fi
# Byte-compile once: with PYTHONDONTWRITEBYTECODE set, every CLI start would recompile the sources.
.venv/bin/python -m compileall -q src >/dev/null
# axe-core for the console's accessibility test, from the npm registry into ~/.cache/weightvault/npm:
if command -v npm >/dev/null; then .venv/bin/python -c 'from tests.custody.console.browser import axe_source; axe_source()'; else echo "setup: npm not found; the console's accessibility test needs it once"; fi
echo "setup: ready (.venv/bin/weightvault)"
