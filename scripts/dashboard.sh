#!/usr/bin/env bash
# dashboard.sh - start the dashboard the way `make run` does: on 127.0.0.1,
# with its login token (made once, root-only, in records/.dashboard_token)
# handed over in its environment, never on its command line. Prints the login
# URL on stderr, then becomes the dashboard (its output goes to LOG).
# Usage: sudo bash scripts/dashboard.sh [PORT [LOG]]      (scripts/run.sh calls it)
# Environment: NETSENTINEL_RECORDS (records dir), DASHBOARD_USER: the user it
# runs as, by default the unprivileged system user "netsentinel" (group
# netsentinel, made by `make install`): it reads records/ and asks root's
# analyzer (dashboard_commands.d/) and loader (ban_commands.d/, rule_commands.d/)
# to act, see docs/DASHBOARD.md "Running unprivileged". DASHBOARD_USER=root
# runs it as root, writing records/ itself (the old way; not recommended).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${1:-8501}
LOG=${2:-logs/dashboard.log}
TOKEN=$("$PY" -m netsentinel.dashboard.access token) || {
  echo "dashboard: not started: no login token (see above)" >&2; exit 1; }
DASH=("$PY" -m streamlit run dashboard.py --server.address 127.0.0.1 --server.port "$PORT"
      --server.headless true --browser.gatherUsageStats false)
USER_=${DASHBOARD_USER:-netsentinel}
if [ "$USER_" != root ]; then
  id -u "$USER_" >/dev/null 2>&1 || {
    echo "dashboard: not started: there is no user $USER_; run sudo make install (it creates it)," \
         "or set DASHBOARD_USER=root" >&2; exit 1; }
  runuser -u "$USER_" -- test -r dashboard.py -a -x "$PY" || {
    echo "dashboard: not started: user $USER_ cannot read $PWD; put the checkout where other users" \
         "may read it (e.g. /opt/netsentinel, or chmod o+x the directories above it), or set" \
         "DASHBOARD_USER=root" >&2; exit 1; }
  id -nG "$USER_" | tr ' ' '\n' | grep -qx netsentinel || echo "dashboard: user $USER_ is not in" \
    "group netsentinel: it can only look (usermod -aG netsentinel $USER_ lets it act)" >&2
  DASH=(runuser -u "$USER_" -- env HOME=/nonexistent "${DASH[@]}")
  # Root's secrets stay root's: nothing key-like in this environment (an API
  # key exported before `sudo -E make run`) reaches the dashboard's user.
  for v in $(compgen -e); do
    case $v in
      NETSENTINEL_DASHBOARD_TOKEN|NETSENTINEL_DASHBOARD_PASSWORD) ;;
      *KEY*|*TOKEN*|*SECRET*|*PASSWORD*|*PASSWD*|*CREDENTIAL*|*_DSN) unset "$v" ;;
    esac
  done
fi
echo "run: dashboard on http://127.0.0.1:$PORT/?token=$TOKEN as user $USER_ (log: $LOG)" >&2
mkdir -p "$(dirname "$LOG")"
NETSENTINEL_DASHBOARD_TOKEN=$TOKEN exec "${DASH[@]}" > "$LOG" 2>&1
