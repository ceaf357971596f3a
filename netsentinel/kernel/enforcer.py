"""The enforcer: bpf/enforce.bpf.c. An ingress filter on one interface
(native XDP, else the same filter as a TCX ingress program; generic XDP only
when asked: kernel/ingress.py says why) and cgroup
connect/sendmsg hooks at the cgroup2 root, sharing the bans4/bans6 LPM tries;
filter rules and per-source statistics live in the same object.

With a pin directory (kernel/pins.py) the maps and links outlive the
process: load() opens (or creates and pins) the maps, the caller fills them,
then attach() adopts the pinned links, swapping the program through each
link only when the program's version differs, or creates and pins them on a
first start. close() lets go of the process's handles and leaves enforcement
in place; pins.unload() is the only way it comes down."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
from typing import Callable

from ..abi import (ENFORCER_CGROUP, ENFORCER_CONTAIN, ENFORCER_MAPS, ENFORCER_TC, ENFORCER_XDP, MAX_BANS,
                   MAX_BANS_LIMIT, META_PROG_VERSION, META_XDP_FLAGS, cflags)
from . import KernelError
from .host import ensure_cgroup2_root, ensure_kernel_fs, import_bcc, program_source
from .libbpf import (ATTACH_CGROUP_INET4_CONNECT, ATTACH_CGROUP_INET6_CONNECT,
                     ATTACH_CGROUP_UDP4_SENDMSG, ATTACH_CGROUP_UDP6_SENDMSG, ATTACH_TCX_INGRESS,
                     ATTACH_XDP,
                     XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, link_create, link_detach, link_info,
                     link_update, map_info, obj_pin)
from . import ingress
from .contain import ContainMaps
from .maps import BanCounters, EnforcerMaps, ktime_to_epoch  # noqa: F401  (re-exported)
from .pins import PinDir
from .xdpstats import XdpStats

CGROUP_HOOKS = tuple(zip(ENFORCER_CGROUP, (ATTACH_CGROUP_INET4_CONNECT, ATTACH_CGROUP_INET6_CONNECT,
                                           ATTACH_CGROUP_UDP4_SENDMSG, ATTACH_CGROUP_UDP6_SENDMSG)))
XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# --xdp-mode -> the paths tried in order; generic only when asked (kernel/ingress.py).
XDP_MODES = {"auto": ("native", "tc"), "native": ("native",), "generic": ("generic",), "tc": ("tc",)}
INGRESS_PATHS = {"native": "xdp-native", "generic": "xdp-generic", "tc": "tcx-ingress"}


class Enforcer(EnforcerMaps, ContainMaps, XdpStats):
    """XDP + cgroup enforcement over one ban set: load(), fill, attach()."""

    def __init__(self, interface: str | None, *, max_bans: int = MAX_BANS, cgroup: bool = True,
                 xdp_mode: str = "auto", pin_root: str | None = None,
                 extra_cflags: dict[str, int] | None = None, warn: Callable[[str], None] = print):
        if not 1 <= max_bans <= MAX_BANS_LIMIT:
            raise ValueError(f"max_bans must be between 1 and {MAX_BANS_LIMIT}")
        self.interface = interface
        self.max_bans = max_bans
        self.want_cgroup = cgroup
        self.want_xdp_mode = xdp_mode
        self.pins = PinDir(pin_root, interface) if pin_root and interface else None
        self.extra_cflags = extra_cflags or {}
        self.warn = warn
        self.bpf = None
        self.bcc = None
        self.xdp_mode: str | None = None          # native, generic or tc
        self.xdp_native_error: str | None = None  # why native XDP is not in use, one line
        self.kernel_taint: str | None = None      # set when attaching generic XDP tainted it
        self.cgroup_path: str | None = None
        self.adopted: list[str] = []     # links found pinned and kept or updated
        self.replaced: list[str] = []    # of those, links whose program was swapped
        self._links: dict[str, int] = {}
        self._rule_slots: list[tuple[str, int]] = []  # (rule id, hit count at load)

    def source_and_flags(self) -> tuple[str, list[str]]:
        return program_source("enforce.bpf.c"), cflags(
            max_bans=self.max_bans, pin_dir=self.pins.path if self.pins else None,
            extra={**self.contain_flags()[0], **self.extra_cflags})

    def version(self) -> int:
        """What decides between keeping and replacing pinned programs: the
        program, the shared header it includes, and the flags."""
        src, flags = self.source_and_flags()
        header = program_source("netsentinel.h")
        digest = hashlib.sha256((src + "\0" + header + "\0" + " ".join(flags)).encode()).digest()
        return int.from_bytes(digest[:8], "little") or 1

    # ---- load: maps exist (pinned ones reused), nothing attached yet
    def load(self) -> None:
        mounted = ensure_kernel_fs()
        self.bcc = import_bcc()
        if self.pins:
            if any(self.pins.root.startswith(m + "/") for m in mounted):
                # A bpffs we just mounted lives in this mount namespace only
                # (`ip netns exec` makes a private one): its pins go with it.
                self.warn(f"bpffs was not mounted here; mounted one, but pins under {self.pins.root} "
                          "last only as long as this mount namespace: pass --pin-dir on the "
                          "host's bpffs for enforcement that outlives the loader")
            self.pins.prepare(self.warn)
        src, flags = self.source_and_flags()
        try:
            self.bpf = self.bcc.BPF(text=src, cflags=flags)
        except Exception as e:  # BCC raises bare Exception on compile/load errors
            raise KernelError(f"cannot compile enforce.bpf.c: {str(e).splitlines()[0]}") from e
        self._check_pinned_maps()
        self.init_ban_cache()

    def _check_pinned_maps(self) -> None:
        """BCC reuses a pinned map without comparing its layout; a map from an
        older, different header would be read wrong. Refuse before attaching."""
        for name in ENFORCER_MAPS:
            t = self.bpf[name]
            info = map_info(t.map_fd)
            leaf = getattr(t, "sLeaf", t.Leaf)
            want = (ctypes.sizeof(t.Key), ctypes.sizeof(leaf), t.max_entries)
            if name == "xdp_events":   # a ring buffer has no key or value, only a size
                want = (0, 0, t.max_entries)
            got = info and (info["key_size"], info["value_size"], info["max_entries"])
            if got != want:
                where = self.pins.path if self.pins else "memory"
                raise KernelError(
                    f"pinned map {name} in {where} has key/value/entries {got}, this version needs "
                    f"{want} (another --max-bans or an older release); the old enforcement stays up: "
                    f"`{self.pins.unload_command() if self.pins else 'unified_ebpf.py --unload'}` "
                    "removes it, then start again")

    # ---- attach: adopt or create the links
    def attach(self) -> None:
        """Adopt the pinned links or attach new ones (load() first if not yet)."""
        if self.bpf is None:
            self.load()
        try:
            version = self.version()
            meta = self.bpf["meta"]
            pinned_version = int(meta[meta.Key(META_PROG_VERSION)].value)
            if self.interface:
                self._attach_ingress(version != pinned_version)
            if self.want_cgroup:
                self._attach_cgroup(version != pinned_version)
                self._attach_contain(version != pinned_version)   # kernel/contain.py
            elif self.pins:
                self._drop_link_kinds((*ENFORCER_CGROUP, *ENFORCER_CONTAIN), "--no-cgroup")
            meta[meta.Key(META_PROG_VERSION)] = ctypes.c_ulonglong(version)
        except BaseException:
            self.close()
            raise

    def _adopt(self, name: str, prog_name: str, prog_type, changed: bool, **load_kw) -> bool:
        """Take over the pinned link `name`, swapping its program if changed.
        False when there is none (or only a dead one, now unpinned)."""
        if not self.pins:
            return False
        fd = self.pins.open_link(name)
        if fd is None:
            return False
        info = link_info(fd)
        if info is None or (name in (ENFORCER_XDP, ENFORCER_TC) and not info["ifindex"]):
            os.close(fd)   # its device went away (interface recreated): start over
            os.unlink(self.pins.link_path(name))
            self.warn(f"pinned link {name} in {self.pins.path} was dead; attaching afresh")
            return False
        if changed:
            fn = self.bpf.load_func(prog_name.encode(), prog_type, **load_kw)
            try:
                link_update(fd, fn.fd)
            except OSError as e:
                os.close(fd)
                raise KernelError(f"cannot replace the program behind pinned link {name}: "
                                  f"{e.strerror}; the previous program stays attached") from e
            self.replaced.append(name)
        self._links[name] = fd
        self.adopted.append(name)
        return True

    def _pin(self, name: str, fd: int) -> None:
        self._links[name] = fd
        if self.pins:
            obj_pin(fd, self.pins.link_path(name))

    def _adopt_ingress(self, changed: bool) -> bool:
        meta = self.bpf["meta"]
        if self._adopt(ENFORCER_XDP, ENFORCER_XDP, self.bcc.BPF.XDP, changed):
            flags = int(meta[meta.Key(META_XDP_FLAGS)].value)
            self.xdp_mode = next((m for m, f in XDP_MODE_FLAGS.items() if f == flags), None)
        elif self._adopt(ENFORCER_TC, ENFORCER_TC, self.bcc.BPF.SCHED_CLS, changed):
            self.xdp_mode = "tc"
            self.xdp_native_error = ingress.why_native_failed(
                ingress.read_device(self.interface), None) + " (kept the pinned TCX link)"
        else:
            return False
        if self.want_xdp_mode not in ("auto", self.xdp_mode):
            self.warn(f"the pinned ingress link on {self.interface} is in {self.xdp_mode} mode; "
                      "kept (--unload, then start again, to change it)")
        return True

    def _attach_ingress(self, changed: bool) -> None:
        if self._adopt_ingress(changed):
            return
        ifindex = socket.if_nametoindex(self.interface)
        errors = []
        for mode in XDP_MODES[self.want_xdp_mode]:
            try:
                fd = self._link_ingress(mode, ifindex)
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.EEXIST):
                    raise KernelError(
                        f"{self.interface} already has an XDP program attached; remove it "
                        f"(`ip link set dev {self.interface} xdp off`) or run with --no-xdp") from e
                errors.append(f"{mode}: {e.strerror}" + (" (TCX needs Linux 6.6+)" if mode == "tc" else ""))
                if mode == "native":
                    self.xdp_native_error = ingress.why_native_failed(
                        ingress.read_device(self.interface), e.strerror)
                continue
            self._pin(ENFORCER_TC if mode == "tc" else ENFORCER_XDP, fd)
            if mode != "tc":
                meta = self.bpf["meta"]
                meta[meta.Key(META_XDP_FLAGS)] = ctypes.c_ulonglong(XDP_MODE_FLAGS[mode])
            self.xdp_mode = mode
            if self.xdp_native_error:
                self.warn(f"{self.xdp_native_error}; using {INGRESS_PATHS[mode]} instead")
            return
        raise KernelError(f"cannot attach the ingress filter to {self.interface}: " + "; ".join(errors)
                          + (f" ({self.xdp_native_error})" if self.xdp_native_error else ""))

    def _load_func(self, name: str, prog_type):
        try:
            return self.bpf.load_func(name.encode(), prog_type)
        except Exception as e:   # BCC raises bare Exception when the verifier refuses
            raise KernelError(f"the kernel refused {name}: {str(e).splitlines()[0]}; "
                              "nothing was attached (`uname -r` and this line in a bug report)") from e

    def _link_ingress(self, mode: str, ifindex: int) -> int:
        if mode == "tc":
            fn = self._load_func(ENFORCER_TC, self.bcc.BPF.SCHED_CLS)
            return link_create(fn.fd, ifindex, ATTACH_TCX_INGRESS)
        fn = self._load_func(ENFORCER_XDP, self.bcc.BPF.XDP)
        if mode != "generic":
            return link_create(fn.fd, ifindex, ATTACH_XDP, XDP_MODE_FLAGS[mode])
        # Asked for: say beforehand if the kernel will warn, and after whether it did.
        why = ingress.generic_xdp_warning(ingress.read_device(self.interface))
        if why:
            self.warn(f"{why}; attaching generic XDP anyway as asked (--xdp-mode tc would not)")
        before = ingress.read_taint()
        fd = link_create(fn.fd, ifindex, ATTACH_XDP, XDP_MODE_FLAGS[mode])
        self.kernel_taint = ingress.taint_note(before, ingress.read_taint(), self.interface)
        if self.kernel_taint:
            self.warn(self.kernel_taint)
        return fd

    def ingress_report(self) -> dict:
        """What the startup event and the status file say about the ingress path."""
        return {"xdp_mode": self.xdp_mode, "xdp_native_error": self.xdp_native_error,
                "ingress_path": INGRESS_PATHS.get(self.xdp_mode or "", None),
                "kernel_taint": self.kernel_taint}

    def _attach_cgroup(self, changed: bool) -> None:
        root = ensure_cgroup2_root()
        cg_fd = None
        try:
            for name, attach_type in CGROUP_HOOKS:
                kw = {"attach_type": attach_type}
                if self._adopt(name, name, self.bcc.BPF.CGROUP_SOCK_ADDR, changed, **kw):
                    continue
                if cg_fd is None:
                    cg_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fn = self.bpf.load_func(name.encode(), self.bcc.BPF.CGROUP_SOCK_ADDR, **kw)
                try:
                    fd = link_create(fn.fd, cg_fd, attach_type)
                except OSError as e:
                    raise KernelError(f"cannot attach {name} to cgroup2 root {root}: {e.strerror}") from e
                self._pin(name, fd)
        finally:
            if cg_fd is not None:
                os.close(cg_fd)
        self.cgroup_path = root

    def _drop_link_kinds(self, names, why: str) -> None:
        for name in names:
            fd = self.pins.open_link(name)
            if fd is not None:
                try:
                    link_detach(fd)
                finally:
                    os.close(fd)
                os.unlink(self.pins.link_path(name))
                self.warn(f"detached pinned {name} ({why})")

    def links(self) -> dict[str, int]:
        """{link name: program id behind it}, as `bpftool link` shows."""
        out = {}
        for name, fd in self._links.items():
            info = link_info(fd)
            if info:
                out[name] = info["prog_id"]
        return out

    def close(self) -> None:
        """Let go of this process's handles. Pinned links and maps stay, so
        enforcement goes on; without pins, closing a link detaches it."""
        while self._links:
            _, fd = self._links.popitem()
            os.close(fd)
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            bpf.cleanup()
