#!/usr/bin/env bash
# The test command: sets up what it needs, then runs pytest (extra arguments go to pytest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup.sh" --browser)
cd "$root"
export GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -q "$@"
