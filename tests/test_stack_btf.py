"""Kernel struct offsets from BTF (netsentinel/kernel/btf.py) and the stack
loader's command line: offsets found through anonymous members and typedefs
as C does, the real kernel's BTF read when present, and a missing BTF turned
into a one-line reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netsentinel.kernel.btf import BTF, BTFError, VMLINUX_BTF, stack_offsets

ROOT = Path(__file__).resolve().parent.parent

# `bpftool btf dump format raw` lines, shaped as this kernel prints sk_buff/net_device.
RAW = """\
[1] INT 'unsigned short' size=2 bits_offset=0 nr_bits=16 encoding=(none)
[2] PTR '(anon)' type_id=0
[3] STRUCT 'sk_buff' size=224 vlen=3
\t'(anon)' type_id=4 bits_offset=0
\t'(anon)' type_id=5 bits_offset=1024
\t'head' type_id=2 bits_offset=1536
[4] UNION '(anon)' size=24 vlen=2
\t'dev' type_id=2 bits_offset=128
\t'dev_scratch' type_id=2 bits_offset=128
[5] STRUCT '(anon)' size=56 vlen=2
\t'flags' type_id=1 bits_offset=0 bitfield_size=3
\t'network_header' type_id=1 bits_offset=416
[6] TYPEDEF 'possible_net_t' type_id=7
[7] STRUCT '(anon)' size=8 vlen=1
\t'net' type_id=2 bits_offset=0
[8] STRUCT 'net_device' size=2496 vlen=2
\t'ifindex' type_id=1 bits_offset=1792
\t'nd_net' type_id=6 bits_offset=2112
"""


def test_offsets_through_anonymous_members_and_typedefs():
    btf = BTF(RAW)
    assert btf.offset("sk_buff", "dev") == 16
    assert btf.offset("sk_buff", "network_header") == 128 + 52
    assert btf.offset("sk_buff", "head") == 192
    assert btf.offset("net_device", "nd_net.net") == 264
    with pytest.raises(BTFError, match="bit-field"):
        btf.offset("sk_buff", "flags")
    with pytest.raises(BTFError, match="no member sk_buff|has no member"):
        btf.offset("sk_buff", "nothere")
    with pytest.raises(BTFError, match="struct nope is not"):
        btf.offset("nope", "x")


def test_missing_btf_is_a_reason():
    with pytest.raises(BTFError, match="CONFIG_DEBUG_INFO_BTF"):
        BTF.load(Path("/nonexistent/vmlinux"))


@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="this kernel has no /sys/kernel/btf/vmlinux")
def test_this_kernels_offsets_are_inside_the_structs():
    offs = stack_offsets()
    assert set(offs) == {"NS_SKB_DEV", "NS_SKB_HEAD", "NS_SKB_NETWORK_HEADER", "NS_DEV_IFINDEX",
                         "NS_DEV_ND_NET", "NS_NET_INUM"}
    assert all(0 <= v < 8192 for v in offs.values())
    assert offs["NS_SKB_DEV"] % 8 == 0 and offs["NS_SKB_HEAD"] % 8 == 0


def test_stack_interval_must_be_positive():
    r = subprocess.run([sys.executable, str(ROOT / "unified_ebpf.py"), "--stack-interval", "0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "--stack-interval must be a positive" in r.stderr
