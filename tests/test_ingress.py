"""Why native XDP failed, and whether generic XDP would taint the kernel
(netsentinel/kernel/ingress.py), from a fake sysfs tree and canned ethtool
output: no virtio NIC exists in the lab, so this is where the virtio wording
is checked. The real ingress paths are in test_kernel_tcx.py."""

from __future__ import annotations

import os
import shutil

import pytest

from netsentinel.kernel import ingress

# `ethtool -k` and `-l` as a virtio-net guest whose host does guest TSO/CSUM
# without ctrl_guest_offloads shows them (trimmed).
VIRTIO_K = """Features for eth0:
rx-checksumming: on [fixed]
large-receive-offload: off [fixed]
rx-gro-hw: on [fixed]
generic-receive-offload: on
"""
VIRTIO_L = """Channel parameters for eth0:
Pre-set maximums:
RX:		n/a
TX:		n/a
Other:		n/a
Combined:	2
Current hardware settings:
RX:		n/a
TX:		n/a
Other:		n/a
Combined:	2
"""
# virtio feature bits: csum(0) guest_csum(1) mac(5) guest_tso4(7) guest_tso6(8) guest_ecn(9)
# guest_ufo(10) mrg_rxbuf(15); no ctrl_guest_offloads(2).
FEATURES = "".join("1" if i in (0, 1, 5, 7, 8, 9, 10, 15) else "0" for i in range(64))


def fake_sysfs(tmp_path, features: str, mtu: int = 1500, driver: str = "virtio_net"):
    dev = tmp_path / "devices/virtio0"
    (dev).mkdir(parents=True)
    (tmp_path / "drivers" / driver).mkdir(parents=True)
    os.symlink(tmp_path / "drivers" / driver, dev / "driver")
    (dev / "features").write_text(features + "\n")
    net = tmp_path / "class/net/eth0"
    net.mkdir(parents=True)
    os.symlink(dev, net / "device")
    (net / "mtu").write_text(f"{mtu}\n")
    return str(tmp_path)


def ethtool_of(k: str, l_: str):
    return lambda *args: {"-k": k, "-l": l_}.get(args[0], "")


def test_virtio_without_ctrl_guest_offloads_says_why_and_what_enables_it(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    v = ingress.read_device("eth0", fake_sysfs(tmp_path, FEATURES), ethtool_of(VIRTIO_K, VIRTIO_L))
    assert (v.driver, v.mtu, v.combined, v.cpus) == ("virtio_net", 1500, (2, 2), 2)
    line = ingress.why_native_failed(v, "Operation not supported")
    assert "\n" not in line
    assert line.startswith("native XDP on eth0 (driver virtio_net) failed: Operation not supported; ")
    assert ("the host does guest_csum/guest_tso4/guest_tso6/guest_ecn/guest_ufo without "
            "ctrl_guest_offloads") in line
    assert "virtio-net-pci,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off" in line
    assert "2 combined queues < 2x2 CPUs" in line
    assert "MTU" not in line and "LRO" not in line
    assert "failed to disable GRO_HW" in ingress.generic_xdp_warning(v)
    assert "rx-gro-hw is on [fixed]" in ingress.generic_xdp_warning(v)


def test_virtio_features_alone_predict_the_taint_without_ethtool(tmp_path):
    v = ingress.read_device("eth0", fake_sysfs(tmp_path, FEATURES, mtu=9000), lambda *a: "")
    assert v.offloads == {} and v.driver == "virtio_net"
    assert "failed to disable GRO_HW" in ingress.generic_xdp_warning(v)
    assert "MTU 9000 > 3506" in ingress.why_native_failed(v, "Invalid argument")


def test_virtio_with_ctrl_guest_offloads_blames_nothing_it_cannot_see(tmp_path):
    features = FEATURES[:2] + "1" + FEATURES[3:]       # ctrl_guest_offloads offered
    k = VIRTIO_K.replace("rx-gro-hw: on [fixed]", "rx-gro-hw: on")
    v = ingress.read_device("eth0", fake_sysfs(tmp_path, features), ethtool_of(k, ""))
    assert ingress.generic_xdp_warning(v) is None    # on but switchable: no WARNING
    v.combined, v.cpus = (8, 8), 4
    assert "8 of 8 combined queues in use leave fewer than 4 for XDP TX: `ethtool -L eth0 combined 4`" \
        in ingress.why_native_failed(v, "Operation not supported")
    v.combined = (4, 8)
    assert ingress.why_native_failed(v, "Device or resource busy") == \
        "native XDP on eth0 (driver virtio_net) failed: Device or resource busy"


def test_other_drivers_lro_and_no_driver_at_all():
    lro = ingress.DeviceView("eth1", driver="ixgbe",
                             offloads={"large-receive-offload": (True, False)})
    line = ingress.why_native_failed(lro, "Invalid argument")
    assert line.endswith("LRO is on: drivers refuse XDP with it (`ethtool -K eth1 lro off`)")
    unknown = ingress.DeviceView("lo", driver=None)
    assert "(driver unknown) failed: Operation not supported; the device has no native XDP" in \
        ingress.why_native_failed(unknown, "Operation not supported")
    fixed_lro = ingress.DeviceView("eth2", offloads={"large-receive-offload": (True, True)})
    assert "failed to disable LRO" in ingress.generic_xdp_warning(fixed_lro)


def test_ethtool_parsers_and_the_taint_note(tmp_path):
    assert ingress.parse_offloads(VIRTIO_K)["rx-gro-hw"] == (True, True)
    assert ingress.parse_offloads(VIRTIO_K)["generic-receive-offload"] == (True, False)
    more = VIRTIO_L.replace("Combined:\t2\nCurrent", "Combined:\t8\nCurrent")
    assert ingress.parse_channels(more) == (2, 8)
    assert ingress.parse_channels("garbage") == (None, None)
    assert ingress.taint_note(0, 0, "eth0") is None
    assert ingress.taint_note(None, 512, "eth0") is None
    note = ingress.taint_note(0, 512, "eth0")
    assert "tainted (0 -> 512) (W: a WARNING was logged" in note and "--xdp-mode tc" in note
    assert "W:" not in ingress.taint_note(512, 513, "eth0")
    (tmp_path / "tainted").write_text("512\n")
    assert ingress.read_taint(str(tmp_path / "tainted")) == 512
    assert ingress.read_taint(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not shutil.which("ethtool"), reason="ethtool (Debian package) is not installed")
def test_the_real_view_of_loopback():
    v = ingress.read_device("lo")
    assert v.offloads["large-receive-offload"] == (False, True)   # "off [fixed]" on lo
    assert ingress.generic_xdp_warning(v) is None
    assert v.mtu and v.cpus == os.cpu_count()
