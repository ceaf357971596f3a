#!/usr/bin/env bash
# units.sh install|uninstall - the systemd units of this checkout.
#   install    where systemd is PID 1: netsentinel.service and
#              netsentinel-dashboard.service into /etc/systemd/system (with
#              this checkout's path), /etc/default/netsentinel once, the
#              system user/group "netsentinel" for the dashboard, the
#              `netsentinel` command linked into /usr/local/bin; then
#              daemon-reload. Nothing is enabled or started: that is
#              `systemctl enable --now netsentinel` (docs/SERVICE.md).
#              Elsewhere (a container, a VM without systemd) it says so and
#              does nothing: `make run` is the way there.
#   uninstall  stop and disable the units, remove them and the link; keeps
#              /etc/default/netsentinel, the user and records/.
# Environment: UNIT_DIR (/etc/systemd/system), DEFAULT_FILE
# (/etc/default/netsentinel), BIN_LINK (/usr/local/bin/netsentinel),
# SYSTEMD_RUN_DIR (/run/systemd/system: present when systemd runs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/scripts/systemd"
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
DEFAULT_FILE=${DEFAULT_FILE:-/etc/default/netsentinel}
BIN_LINK=${BIN_LINK:-/usr/local/bin/netsentinel}
SYSTEMD_RUN_DIR=${SYSTEMD_RUN_DIR:-/run/systemd/system}
UNITS=(netsentinel.service netsentinel-dashboard.service)

say() { echo "units: $*"; }
die() { echo "units: error: $*" >&2; exit 1; }
systemd_runs() { [ -d "$SYSTEMD_RUN_DIR" ]; }

render() {  # unit template -> installed unit with this checkout's path
  sed "s|@ROOT@|$ROOT|g" "$HERE/$1"
}

install_units() {
  if ! systemd_runs; then
    say "systemd is not running here (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo unknown)); units not installed: start with sudo make run"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "must run as root (sudo make install)"
  case "$ROOT" in *[[:space:]]*) die "the checkout path '$ROOT' has a space; systemd units need one without";; esac
  if ! getent group netsentinel >/dev/null; then groupadd --system netsentinel; fi
  if ! getent passwd netsentinel >/dev/null; then
    useradd --system --gid netsentinel --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "NetSentinel dashboard" netsentinel
    say "created system user netsentinel (runs the dashboard)"
  fi
  mkdir -p "$UNIT_DIR"
  for u in "${UNITS[@]}"; do
    render "$u" > "$UNIT_DIR/$u.tmp"
    chmod 0644 "$UNIT_DIR/$u.tmp"
    mv "$UNIT_DIR/$u.tmp" "$UNIT_DIR/$u"
    say "installed $UNIT_DIR/$u"
  done
  if [ ! -e "$DEFAULT_FILE" ]; then
    install -m 0644 "$HERE/netsentinel.default" "$DEFAULT_FILE"
    say "installed $DEFAULT_FILE (edit it to choose the interface and flags)"
  fi
  if [ -x "$ROOT/.venv/bin/netsentinel" ]; then
    mkdir -p "$(dirname "$BIN_LINK")"
    ln -sfn "$ROOT/.venv/bin/netsentinel" "$BIN_LINK"
    say "linked $BIN_LINK"
  fi
  if [ "$SYSTEMD_RUN_DIR" = /run/systemd/system ]; then systemctl daemon-reload; fi
  say "done. Start at boot and now: sudo systemctl enable --now netsentinel netsentinel-dashboard"
}

uninstall_units() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (sudo make uninstall)"
  for u in "${UNITS[@]}"; do
    [ -e "$UNIT_DIR/$u" ] || continue
    if systemd_runs && [ "$SYSTEMD_RUN_DIR" = /run/systemd/system ]; then
      systemctl disable --now "$u" 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/$u"
    say "removed $UNIT_DIR/$u"
  done
  if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$ROOT/.venv/bin/netsentinel" ]; then
    rm -f "$BIN_LINK"
    say "removed $BIN_LINK"
  fi
  if systemd_runs && [ "$SYSTEMD_RUN_DIR" = /run/systemd/system ]; then systemctl daemon-reload; fi
  say "done (kept: $DEFAULT_FILE, the netsentinel user, records/)"
}

case "${1:-}" in
  install) install_units ;;
  uninstall) uninstall_units ;;
  *) die "usage: $0 install|uninstall" ;;
esac
