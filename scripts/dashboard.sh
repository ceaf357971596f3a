#!/usr/bin/env bash
# dashboard.sh - start the dashboard the way `make run` does: on 127.0.0.1,
# with its login token (made once, root-only, in records/.dashboard_token)
# handed over in its environment, never on its command line. Prints the login
# URL on stderr, then becomes the dashboard (its output goes to LOG).
# Usage: sudo bash scripts/dashboard.sh [PORT [LOG]]      (scripts/run.sh calls it)
# Environment: NETSENTINEL_RECORDS (records dir), DASHBOARD_USER (run it as
# this user: it reads records/ and queues commands only where it may, see
# docs/DASHBOARD.md "Running unprivileged").
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${1:-8501}
LOG=${2:-logs/dashboard.log}
TOKEN=$("$PY" -m netsentinel.dashboard.access token) || {
  echo "dashboard: not started: no login token (see above)" >&2; exit 1; }
DASH=("$PY" -m streamlit run dashboard.py --server.address 127.0.0.1 --server.port "$PORT"
      --server.headless true --browser.gatherUsageStats false)
[ -n "${DASHBOARD_USER:-}" ] && DASH=(runuser -u "$DASHBOARD_USER" -- env HOME=/nonexistent "${DASH[@]}")
echo "run: dashboard on http://127.0.0.1:$PORT/?token=$TOKEN (log: $LOG)" >&2
mkdir -p "$(dirname "$LOG")"
NETSENTINEL_DASHBOARD_TOKEN=$TOKEN exec "${DASH[@]}" > "$LOG" 2>&1
