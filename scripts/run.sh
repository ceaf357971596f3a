#!/usr/bin/env bash
# run.sh - start NetSentinel: the dashboard in the background, then the
# pipeline `unified_ebpf.py | llm_analyzer.py` in the foreground. Ctrl-C (or
# SIGTERM) stops everything; the loader detaches its programs on the way out.
# Usage: sudo bash scripts/run.sh [IFACE]     (normally via: sudo make run IFACE=eth0)
# Environment: DASHBOARD_PORT (8501), ANALYZER_ARGS (e.g. "--backend ollama"),
# DASHBOARD_USER (run the dashboard as this user, read-only for now).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ "$(id -u)" -eq 0 ] || { echo "run: must run as root (sudo make run)" >&2; exit 1; }
LOADER_ARGS=()
[ -n "${1:-}" ] && LOADER_ARGS=(-i "$1")
PORT=${DASHBOARD_PORT:-8501}
mkdir -p logs

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap stop INT TERM EXIT

if [ -f dashboard.py ]; then
  # Every local user can reach 127.0.0.1: the dashboard asks for a token, made
  # once and kept root-only in records/.dashboard_token (0600). It is handed to
  # the dashboard in its environment, and printed here as the login URL.
  if TOKEN=$("$PY" -m netsentinel.dashboard.access token); then
    DASH=("$PY" -m streamlit run dashboard.py --server.address 127.0.0.1 --server.port "$PORT"
          --server.headless true --browser.gatherUsageStats false)
    # DASHBOARD_USER=netsentinel: run it as that user, which can read records/
    # but not write it yet (docs/DASHBOARD.md, "Running unprivileged").
    [ -n "${DASHBOARD_USER:-}" ] && DASH=(runuser -u "$DASHBOARD_USER" -- env HOME=/nonexistent "${DASH[@]}")
    NETSENTINEL_DASHBOARD_TOKEN=$TOKEN "${DASH[@]}" > logs/dashboard.log 2>&1 &
    pids+=($!)
    echo "run: dashboard on http://127.0.0.1:$PORT/?token=$TOKEN (log: logs/dashboard.log)" >&2
  else
    echo "run: dashboard not started: no login token (see above)" >&2
  fi
fi
if [ -f llm_analyzer.py ]; then
  # shellcheck disable=SC2086
  "$PY" -u unified_ebpf.py "${LOADER_ARGS[@]}" | "$PY" -u llm_analyzer.py ${ANALYZER_ARGS:-}
else
  "$PY" -u unified_ebpf.py "${LOADER_ARGS[@]}"
fi
