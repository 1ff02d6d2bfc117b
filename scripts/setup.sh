#!/usr/bin/env bash
# Creates (or reuses) the virtual environment outside the clone, keyed by the requirements, so
# reruns on the same machine cost seconds. Prints nothing but errors; source it to activate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
key=$(cat "$root/requirements.txt" "$root/requirements-dev.txt" "$root/requirements-ray.txt" | sha1sum | cut -c1-12)
venv="${VSA_VENV:-$HOME/.cache/visual-shop-assistant/venv-$key}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setting up $venv (first run: a few minutes for torch)..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$root/requirements-dev.txt"
  "$venv/bin/pip" install -q -r "$root/requirements-ray.txt"  # the tests run the Ray engine too
  touch "$venv/.complete"
fi
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
    echo "could not install chromium: the browser tests will be skipped" >&2
fi
echo "$venv"
