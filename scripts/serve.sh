#!/usr/bin/env bash
# The main job: sets up what it needs, indexes the catalog when there is no index yet, and
# opens the assistant on http://127.0.0.1:7860. Extra arguments go to `app.py serve`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup.sh")
cd "$root"
export GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False
exec "$venv/bin/python" app.py serve --catalog "${CATALOG:-../shared/catalog}" "$@"
