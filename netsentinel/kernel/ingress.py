"""Which ingress path an interface can take, and why, in one line each.

Native XDP is best; where the driver refuses it (virtio-net on most cloud
VMs: "Operation not supported") the choice is between generic XDP and a TCX
ingress program (bpf/enforce.bpf.c ns_tc_filter, the same body and maps).

Generic XDP is never chosen unless asked for (--xdp-mode generic). It runs
on the skb like TC does, so it is no faster than TCX, and attaching it
changes the device: the kernel's generic_xdp_install() (net/core/dev.c)
calls dev_disable_lro() and dev_disable_gro_hw(), and where the driver
cannot turn the offload off (virtio-net whose host offers guest TSO/CSUM
without VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: `rx-gro-hw: on [fixed]`) the
kernel logs a WARNING with a stack trace and taints itself (TAINT_WARN).
TCX touches no offload, so `auto` is native, then TCX.

The device is read from sysfs (driver link, virtio feature bits) and
`ethtool -i/-k/-l` where ethtool is installed; a DeviceView can be built by
hand, which is how the tests check the wording."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

# Bits of /sys/class/net/IF/device/features on a virtio device
# (include/uapi/linux/virtio_net.h).
VIRTIO_GUEST_CSUM, VIRTIO_CTRL_GUEST_OFFLOADS = 1, 2
VIRTIO_GUEST_OFFLOADS = {1: "guest_csum", 7: "guest_tso4", 8: "guest_tso6", 9: "guest_ecn",
                         10: "guest_ufo", 54: "guest_uso4", 55: "guest_uso6"}
# virtio_net refuses XDP without frags above PAGE_SIZE minus its headroom
# and skb_shared_info, minus the Ethernet header (4096 - 576 - 14).
VIRTIO_XDP_MAX_MTU = 3506
# The offloads generic_xdp_install() turns off, as `ethtool -k` names them.
GENERIC_XDP_OFFLOADS = (("rx-gro-hw", "GRO_HW"), ("large-receive-offload", "LRO"))
TAINT_FILE = "/proc/sys/kernel/tainted"
TAINT_WARN_BIT = 9   # 'W': a kernel WARNING was logged


@dataclass
class DeviceView:
    ifname: str
    driver: str | None = None
    virtio_features: str | None = None          # "0101...": bit i is character i
    offloads: dict[str, tuple[bool, bool]] = field(default_factory=dict)   # name -> (on, fixed)
    combined: tuple[int | None, int | None] = (None, None)                 # (current, maximum)
    cpus: int = 1
    mtu: int | None = None

    def virtio_bit(self, bit: int) -> bool:
        f = self.virtio_features or ""
        return bit < len(f) and f[bit] == "1"


def parse_offloads(text: str) -> dict[str, tuple[bool, bool]]:
    """`ethtool -k IF` -> {feature: (on, fixed)}."""
    out = {}
    for line in text.splitlines():
        name, sep, rest = line.strip().partition(":")
        words = rest.split()
        if sep and words and words[0] in ("on", "off"):
            out[name] = (words[0] == "on", "[fixed]" in rest)
    return out


def parse_channels(text: str) -> tuple[int | None, int | None]:
    """`ethtool -l IF` -> (current combined, maximum combined)."""
    values, section = {}, None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Pre-set maximums"):
            section = "max"
        elif s.startswith("Current hardware settings"):
            section = "cur"
        elif s.startswith("Combined:") and section:
            v = s.split(":", 1)[1].strip()
            values[section] = int(v) if v.isdigit() else None
    return values.get("cur"), values.get("max")


def _ethtool(*args: str) -> str:
    if not shutil.which("ethtool"):
        return ""
    try:
        r = subprocess.run(["ethtool", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 else ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_device(ifname: str, sysfs: str = "/sys", ethtool=_ethtool) -> DeviceView:
    """What the kernel says about ifname; whatever cannot be read stays unknown."""
    base = os.path.join(sysfs, "class/net", ifname)
    driver = None
    for line in ethtool("-i", ifname).splitlines():
        if line.startswith("driver:"):
            driver = line.split(":", 1)[1].strip() or None
    if driver is None:
        try:
            driver = os.path.basename(os.readlink(os.path.join(base, "device/driver")))
        except OSError:
            pass
    mtu = _read(os.path.join(base, "mtu"))
    return DeviceView(ifname=ifname, driver=driver,
                      virtio_features=_read(os.path.join(base, "device/features")),
                      offloads=parse_offloads(ethtool("-k", ifname)),
                      combined=parse_channels(ethtool("-l", ifname)),
                      cpus=os.cpu_count() or 1, mtu=int(mtu) if mtu and mtu.isdigit() else None)


def _virtio_blocking_offloads(v: DeviceView) -> list[str]:
    """Guest offloads the host does while the guest cannot switch them off:
    virtnet_xdp_set() refuses XDP (EOPNOTSUPP) for exactly these."""
    if v.driver != "virtio_net" or v.virtio_bit(VIRTIO_CTRL_GUEST_OFFLOADS):
        return []
    return [name for bit, name in VIRTIO_GUEST_OFFLOADS.items() if v.virtio_bit(bit)]


def why_native_failed(v: DeviceView, error: str | None) -> str:
    """One line: why native XDP failed on this device and what would enable it."""
    head = (f"native XDP on {v.ifname} (driver {v.driver or 'unknown'}) failed: {error}"
            if error else f"native XDP on {v.ifname} (driver {v.driver or 'unknown'}) not retried")
    why = []
    blocking = _virtio_blocking_offloads(v)
    if blocking:
        why.append(f"the host does {'/'.join(blocking)} without ctrl_guest_offloads "
                   "(rx-gro-hw on [fixed]), so virtio_net refuses XDP; enable it on the host: "
                   f"QEMU -device virtio-net-pci,{','.join(n + '=off' for n in blocking)} "
                   "or libvirt <driver><guest .../></driver> with those off")
    elif v.driver == "virtio_net" and v.virtio_features is None:
        why.append("virtio_net refuses XDP while the host does guest TSO/CSUM it cannot switch off "
                   "(check `ethtool -k` rx-gro-hw: on [fixed])")
    if v.driver == "virtio_net" and v.mtu and v.mtu > VIRTIO_XDP_MAX_MTU:
        why.append(f"MTU {v.mtu} > {VIRTIO_XDP_MAX_MTU}: `ip link set {v.ifname} mtu 1500`")
    cur, most = v.combined
    if v.driver == "virtio_net" and most is not None and most < 2 * v.cpus:
        why.append(f"{most} combined queues < 2x{v.cpus} CPUs: XDP would share locked TX queues "
                   "(give the VM more queues, then `ethtool -L " f"{v.ifname} combined {v.cpus}`)")
    elif v.driver == "virtio_net" and most is not None and cur is not None and cur + v.cpus > most:
        # virtio_net takes one XDP TX queue per CPU from the queues left unused.
        why.append(f"{cur} of {most} combined queues in use leave fewer than {v.cpus} for XDP TX: "
                   f"`ethtool -L {v.ifname} combined {most - v.cpus}`")
    lro_on, lro_fixed = v.offloads.get("large-receive-offload", (False, False))
    if lro_on:
        why.append(f"LRO is on{' and fixed' if lro_fixed else ''}: drivers refuse XDP with it"
                   + ("" if lro_fixed else f" (`ethtool -K {v.ifname} lro off`)"))
    if not why and v.driver != "virtio_net":
        why.append(f"{'driver ' + v.driver if v.driver else 'the device'} has no native XDP; "
                   "a NIC whose driver has it (e.g. ixgbe, i40e, mlx5, ena, virtio_net) would")
    return head + ("; " + "; ".join(why) if why else "")


def generic_xdp_warning(v: DeviceView) -> str | None:
    """Why attaching generic XDP would make the kernel WARN and taint itself
    (an offload generic_xdp_install() must turn off is on and fixed), or
    None. A blocking virtio offload set is the same condition seen from
    the virtio feature bits, for hosts without ethtool."""
    for name, label in GENERIC_XDP_OFFLOADS:
        on, fixed = v.offloads.get(name, (False, False))
        if on and fixed:
            return (f"{name} is on [fixed] on {v.ifname}: generic XDP cannot turn it off, so the "
                    f"kernel logs 'failed to disable {label}' with a WARNING and taints itself")
    if _virtio_blocking_offloads(v) and not v.offloads:
        return (f"{v.ifname}'s virtio host does guest offloads the guest cannot switch off: generic "
                "XDP would make the kernel log 'failed to disable GRO_HW' and taint itself")
    return None


def read_taint(path: str = TAINT_FILE) -> int | None:
    text = _read(path)
    return int(text) if text and text.isdigit() else None


def taint_note(before: int | None, after: int | None, ifname: str) -> str | None:
    """One line when attaching raised the kernel's taint, else None."""
    if before is None or after is None or after == before:
        return None
    warned = " (W: a WARNING was logged, see `dmesg`)" if (after & ~before) >> TAINT_WARN_BIT & 1 else ""
    return (f"the kernel became tainted ({before} -> {after}){warned} when generic XDP was "
            f"attached to {ifname}; it stays so until reboot: prefer --xdp-mode tc")
