#!/bin/sh
# A CrowdSec "custom bouncer" for NetSentinel: crowdsec-custom-bouncer runs
# this script once per decision, as
#   netsentinel-custom-bouncer.sh add <ip> <duration_seconds> <reason> <json>
#   netsentinel-custom-bouncer.sh del <ip> <duration_seconds> <reason> <json>
# and NetSentinel enforces it (XDP drop + cgroup blocks), with the same checks
# as every other ban: a whitelisted or protected address, or a network too
# broad, is refused with a one-line reason on stderr and exit status 1.
#
# Install: copy to /usr/local/bin, then in
# /etc/crowdsec/bouncers/crowdsec-custom-bouncer.yaml:
#   bin_path: /usr/local/bin/netsentinel-custom-bouncer.sh
# Environment: NETSENTINEL (the command, default: netsentinel on PATH),
# NETSENTINEL_RECORDS (the records/ folder of the running loader).
set -u
NETSENTINEL=${NETSENTINEL:-netsentinel}
action=${1:-}
ip=${2:-}
duration=${3:-0}
reason=${4:-crowdsec}
case "$action" in
  add)
    ttl=""
    # CrowdSec sends whole seconds; 0 or nothing means no expiry from us.
    case "$duration" in ''|*[!0-9]*|0) ;; *) ttl="--ttl $duration" ;; esac
    # shellcheck disable=SC2086
    exec $NETSENTINEL bans add "$ip" $ttl --source crowdsec --reason "crowdsec: $reason" ;;
  del)
    exec $NETSENTINEL bans del "$ip" --source crowdsec ;;
  *)
    echo "netsentinel-custom-bouncer: error: usage: $0 add|del IP DURATION REASON [JSON]" >&2
    exit 2 ;;
esac
