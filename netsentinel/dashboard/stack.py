"""Stack: what the kernel dropped and why, and TCP health per connection
(records/stack.json, written by the loader with --stack; docs/STACK.md)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from .. import records, stackfacts
from .context import Ctx
from .data import read_json
from .ui import md

SORTS = {"retransmits": "retransmits", "smoothed RTT": "srtt_ms", "resets received": "rst_recv",
         "full-queue drops": "queue_drops", "last seen": "last_seen"}
TCP_COLUMNS = ["process", "pid", "direction", "local", "remote", "state", "srtt_ms", "cwnd",
               "retransmits", "rst_sent", "rst_recv", "queue_drops", "segments_in", "closed", "last_seen"]


def _doc(ctx: Ctx) -> dict:
    doc, notice = read_json(ctx.store, records.STACK, {})
    if notice:
        ctx.snap.notices[records.STACK] = notice
    return doc if isinstance(doc, dict) else {}


def reasons_over_time(history: list[dict]) -> None:
    st.subheader("Drop reasons over time")
    rows = [{"time": h["ts"], "reason": str(reason), "drops": n}
            for h in history if isinstance(h.get("reasons"), dict)
            for reason, n in h["reasons"].items() if isinstance(n, int)]
    if not rows:
        st.info("No drops recorded yet.")
        return
    df = pd.DataFrame(rows)
    df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    df = df.dropna(subset=["time"])
    chart = (alt.Chart(df).mark_bar()
             .encode(x=alt.X("time:T", title="interval end (UTC)", axis=alt.Axis(format="%H:%M:%S"),
                             scale=alt.Scale(type="utc")),
                     y=alt.Y("drops:Q", stack=True), color=alt.Color("reason:N"),
                     tooltip=["time:T", "reason:N", "drops:Q"])
             .properties(height=260))
    st.altair_chart(chart, width="stretch")
    totals = df.groupby("reason")["drops"].sum().sort_values(ascending=False).reset_index()
    st.dataframe(totals, hide_index=True, key="stack_reason_totals")


def top_sites(sites: list[dict]) -> None:
    st.subheader("Top dropping locations")
    if not sites:
        st.info("No drop locations recorded yet.")
        return
    df = pd.DataFrame(sites)[["count", "reason", "location", "ifname", "xdp"]]
    df["ifname"] = df["ifname"].fillna("(another namespace)")
    st.dataframe(df, hide_index=True, key="stack_sites",
                 column_config={"xdp": st.column_config.CheckboxColumn("XDP verdict")})


def tcp_table(conns: list[dict]) -> None:
    st.subheader("TCP health")
    if not conns:
        st.info("No TCP connections reported yet.")
        return
    by = st.selectbox("Sort by", list(SORTS), key="stack_tcp_sort")
    df = pd.DataFrame([{
        "process": c.get("comm") or "(no process)", "pid": c.get("pid"), "direction": c.get("direction"),
        "local": f"{c['saddr']}:{c['sport']}", "remote": f"{c['daddr']}:{c['dport']}",
        "state": c.get("state"), "srtt_ms": c.get("srtt_ms"), "cwnd": c.get("cwnd"),
        "retransmits": c.get("retransmits"), "rst_sent": c.get("rst_sent"), "rst_recv": c.get("rst_recv"),
        "queue_drops": c.get("queue_drops"),
        "segments_in": c.get("segments_in"), "closed": bool(c.get("final")),
        "last_seen": c.get("last_seen")} for c in conns])
    df["last_seen"] = pd.to_datetime(df["last_seen"], utc=True, errors="coerce")
    df = df.sort_values(SORTS[by], ascending=False, na_position="last")
    st.dataframe(df[TCP_COLUMNS], hide_index=True, key="stack_tcp",
                 column_config={"last_seen": st.column_config.DatetimeColumn("last seen (UTC)",
                                                                             format="HH:mm:ss"),
                                "pid": st.column_config.NumberColumn(format="%d")})


PROTOS = {6: "TCP", 17: "UDP"}
# Drop reasons that mean "the socket's receive buffer was full".
FULL_QUEUE_REASONS = ("SOCKET_RCVBUFF", "PROTO_MEM")


def _owner(q: dict) -> str:
    return f"{q.get('comm')} [{q.get('pid')}]" if q.get("pid") else "(not found)"


def full_queues(sockets: list[dict], drops: list[dict], conns: list[dict], tracepoint_hits) -> None:
    """Sockets whose receive queue overflowed: per socket (the kernel names
    it at the drop) with its process and memory; from an older loader, the
    SOCKET_RCVBUFF/PROTO_MEM drop flows with the owner a TCP row names."""
    st.subheader("Full receive queues")
    if isinstance(tracepoint_hits, int):
        st.caption(f"sock:sock_rcvqueue_full fired {tracepoint_hits} times since the loader started "
                   "(on 6.x kernels UDP and raw sockets report a full queue as SOCKET_RCVBUFF drops instead)")
    if sockets:
        st.dataframe(pd.DataFrame([{
            "socket": f"{q['local']}:{q['port']}", "protocol": PROTOS.get(q.get("proto"), q.get("proto")),
            "process": _owner(q), "uid": q.get("uid"), "drops": q["drops"], "reason": q.get("reason"),
            "memory / limit": f"{q.get('rmem_alloc')} / {q.get('rcvbuf')} B", "last sender": q.get("last_src"),
            "last seen": q.get("last_seen")} for q in sockets]), hide_index=True, key="stack_full_queues")
        return
    owner = {f"{c['saddr']}:{c['sport']}": f"{c.get('comm')} [{c.get('pid')}]" for c in conns if c.get("pid")}
    rows = [{"socket": f"{d['dst']}:{d['dport']}", "protocol": PROTOS.get(d.get("proto"), d.get("proto")),
             "sender": d["src"], "drops": d["count"], "reason": d["reason"],
             "process": owner.get(f"{d['dst']}:{d['dport']}", "")}
            for d in drops if d["reason"] in FULL_QUEUE_REASONS]
    if not rows:
        st.info("No socket's receive queue overflowed.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="stack_full_queues")


# What each hook of the path is (bpf/stack_path.bpf.c), for the diagram.
HOOK_LABELS = {"start": "first hook", "receive": "receive\nnetif_receive_skb", "tcp": "TCP\ntcp_probe",
               "socket": "read by the process\nskb_copy_datagram_iovec", "consumed": "consumed\nconsume_skb"}


def _q(text) -> str:
    """A DOT string literal, lines kept (the file is the loader's, but a
    quote or backslash in it must not break the diagram)."""
    esc = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + esc.replace("\n", "\\n") + '"'


def _latency(us) -> str:
    if not isinstance(us, (int, float)):
        return ""
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def flow_label(p: dict) -> str:
    proto = PROTOS.get(p.get("proto"), f"proto {p.get('proto')}")
    return (f"{proto} {p.get('src')}:{p.get('sport')} → {p.get('dst')}:{p.get('dport')}"
            f" ({p.get('packets', 0)} packets)")


def path_dot(p: dict) -> str:
    """The path diagram: hooks as nodes with the packets that reached them,
    edges with their packets and median latency."""
    nodes = p.get("nodes") if isinstance(p.get("nodes"), dict) else {}
    out = ["digraph path {", "rankdir=LR;",
           'node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="sans-serif"];',
           'edge [fontname="sans-serif", fontsize=10];',
           f'"start" [shape=plaintext, style="", label={_q(flow_label(p))}];']
    for name, count in nodes.items():
        if name == "start":
            continue
        drop = str(name).startswith("dropped")
        label = f"dropped\n{str(name)[8:]}\nkfree_skb" if drop else HOOK_LABELS.get(name, name)
        fill = ', fillcolor="#fbe3e3"' if drop else ""
        text = f"{label}\n{count} packets"
        out.append(f"{_q(name)} [label={_q(text)}{fill}];")
    for e in stackfacts.rows(p.get("edges"), ("from", "to", "count")):
        label = f"{e['count']}"
        if e.get("median_us") is not None:
            label += f"\nmedian {_latency(e['median_us'])}"
        out.append(f"{_q(e['from'])} -> {_q(e['to'])} [label={_q(label)}];")
    out.append("}")
    return "\n".join(out)


def flow_path(paths: list[dict], sockets: list[dict]) -> None:
    st.subheader("Path of a flow")
    if not paths:
        st.info("No packet paths recorded yet.")
        return
    labels = [flow_label(p) for p in paths]
    chosen = st.selectbox("Flow", range(len(paths)), format_func=lambda i: labels[i], key="stack_path_flow")
    p = paths[chosen]
    st.graphviz_chart(path_dot(p))
    full = next((q for q in sockets if (q["local"], q["port"], q.get("proto")) == (p.get("dst"), p.get("dport"),
                                                                                  p.get("proto"))), None)
    if full:
        # md(): the process name is the process's own choice (never markdown).
        st.warning(md(f"Its receiving socket's queue was full: {full['drops']} packets dropped, "
                      f"held by {_owner(full)} (memory {full.get('rmem_alloc')} of {full.get('rcvbuf')} bytes)."))
    edges = stackfacts.rows(p.get("edges"), ("from", "to", "count"))
    st.dataframe(pd.DataFrame([{"from": e["from"], "to": e["to"], "packets": e["count"],
                                "median": _latency(e.get("median_us")), "mean": _latency(e.get("mean_us"))}
                               for e in edges]), hide_index=True, key="stack_path_edges")
    st.caption("Received packets, hook by hook (kernel tracepoints); latencies are the time between two "
               "hooks, the median to within its log2 bucket. A packet freed where no tracepoint fires "
               "ends its path at its last hook.")


def render(ctx: Ctx) -> None:
    st.header("Stack")
    doc = _doc(ctx)
    if not doc:
        st.info("No stack data yet: the loader writes stack.json while it runs with --stack "
                "(the default). Start it with `sudo make run`.")
        return
    for why in (doc.get("detail_off_reason"), doc.get("tcp_off_reason"), doc.get("path_off_reason"),
                doc.get("accept_off_reason"), doc.get("rcvq_off_reason")):
        if isinstance(why, str):
            st.warning(why)
    totals = doc.get("totals") if isinstance(doc.get("totals"), dict) else {}
    cols = st.columns(3)
    cols[0].metric("Kernel drops", totals.get("drops", 0), border=True,
                   help="packets the kernel dropped since the loader started (XDP drops of ours once)")
    cols[1].metric("Intervals with drops", totals.get("intervals", 0), border=True)
    cols[2].metric("TCP reports", totals.get("tcp_reported", 0), border=True)
    st.caption(f"updated {doc.get('updated_at', '-')} · every {doc.get('interval_s', '-')} s")
    reasons_over_time(stackfacts.rows(doc.get("history"), ("ts", "reasons")))
    top_sites(stackfacts.rows(doc.get("sites"), ("count", "reason", "location", "ifname", "xdp")))
    conns = stackfacts.rows(doc.get("connections"), ("saddr", "sport", "daddr", "dport"))
    tcp_table(conns)
    sockets = stackfacts.rows(doc.get("full_queues"), ("local", "port", "drops"))
    drops = stackfacts.rows(doc.get("drop_flows"), ("src", "dst", "dport", "reason", "count"))
    full_queues(sockets, drops, conns, totals.get("rcvqueue_full"))
    flow_path(stackfacts.rows(doc.get("paths"), ("src", "sport", "dst", "dport", "nodes", "edges")), sockets)
