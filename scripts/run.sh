#!/usr/bin/env bash
# run.sh - start NetSentinel: the dashboard in the background, then the
# pipeline `unified_ebpf.py | llm_analyzer.py` in the foreground. Ctrl-C (or
# SIGTERM) stops everything and then runs `unified_ebpf.py --unload`: the
# loader alone leaves its pinned enforcement in place when it stops (so bans
# hold across restarts and crashes); `make run` is interactive, so its Ctrl-C
# takes enforcement down too, and says so.
# Usage: sudo bash scripts/run.sh [IFACE]     (normally via: sudo make run IFACE=eth0)
# Environment: DASHBOARD_PORT (8501), ANALYZER_ARGS (e.g. "--backend ollama"),
# DASHBOARD_USER (the dashboard's user: netsentinel, unprivileged, unless set;
# see scripts/dashboard.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ "$(id -u)" -eq 0 ] || { echo "run: must run as root (sudo make run)" >&2; exit 1; }
IFACE=${1:-}
LOADER_ARGS=()
[ -n "$IFACE" ] && LOADER_ARGS=(-i "$IFACE")
PORT=${DASHBOARD_PORT:-8501}
mkdir -p logs

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  # Without IFACE the loader used the default route's interface, and so does --unload.
  echo "run: removing NetSentinel's enforcement (unified_ebpf.py --unload${IFACE:+ -i $IFACE});" \
       "bans stop applying until the next start" >&2
  "$PY" -u unified_ebpf.py --unload "${LOADER_ARGS[@]}" >&2
}
trap stop INT TERM EXIT

# It asks for a token (every local user can reach 127.0.0.1); dashboard.sh
# prints the login URL. It runs as the unprivileged user netsentinel: what it
# decides is carried out by the loader and the analyzer below, as root.
bash scripts/dashboard.sh "$PORT" logs/dashboard.log &
pids+=($!)
# unified_ebpf.py | llm_analyzer.py under the supervisor: the analyzer is
# restarted if it dies while the loader keeps enforcing (docs/SERVICE.md).
"$PY" -u -m netsentinel.service "${LOADER_ARGS[@]}" --analyzer-args="${ANALYZER_ARGS:-}"
