"""The records sink's pending threats: a batch merged into
records/pending_threats.json on the flusher thread, paced, and the
automatic bans it allows (auto_ban_critical, auto_block_floods). A mixin
of sinks.RecordsSink, whose state (the batch, its lock, the store, the
settings and whitelist getters, the event store's rows) it uses."""

from __future__ import annotations

import time

from .. import logfmt, sightings, threats
from ..bancheck import BanRefused
from ..errors import DecisionError
from ..eventstore.rows import record_row
from .evidence import auto_bannable

THREATS_DUTY = 19           # a rewrite of pending_threats.json taking t waits THREATS_DUTY * t


class ThreatFlush:
    def _flush_threats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._threats_next:
            return
        with self._lock:
            batch, self._threats = self._threats, {}
        if not batch:
            return
        cfg = self.get_cfg()
        try:
            results = threats.add_or_merge_many(self.store, [(t, n) for t, n in batch.values()])
        except Exception:
            with self._lock:  # keep the batch for the next try (new sightings merge in)
                for key, (t, n) in batch.items():
                    cur = self._threats.get(key)
                    if cur is None:
                        self._threats[key] = [t, n]
                    else:  # newer sightings arrived meanwhile: keep both
                        sightings.merge_sighting(t, cur[0])
                        self._threats[key] = [t, cur[1] + n]
            raise
        # The file is rewritten whole (and read back whole) on the flusher
        # thread, which shares the interpreter with the reader: at most a
        # twentieth of the time goes to it, however big a flood has made it.
        self._threats_next = now + THREATS_DUTY * (time.monotonic() - now)
        self.threats_written += len(results)
        for stored, merged in results:
            if not merged and self.events is not None:
                self._event_rows.append(record_row("threat", stored))
            if not merged:  # one key=value line per new threat (docs/SERVICE.md)
                logfmt.log("threat", "analyzer", id=stored.get("id"), level=stored.get("level"),
                           category=stored.get("category"), target=stored.get("target"),
                           confidence=stored.get("confidence"), kind=stored.get("kind"),
                           source=stored.get("verdict_source"), reason=stored.get("reason"))
            if stored.get("status") != "pending" or stored.get("level") != "CRITICAL":
                continue
            if stored.get("kind") == "flood":
                # flood_gate: the auto-ban policy (analyzer/autoban.py, issue 13)
                if cfg["auto_block_floods"] and (self.flood_gate is None or self.flood_gate(stored)):
                    self._auto_ban(stored, cfg, flood=True)
            elif cfg["auto_ban_critical"] and auto_bannable(stored, cfg["auto_ban_min_confidence"]):
                self._auto_ban(stored, cfg)

    def _auto_ban(self, threat: dict, cfg: dict, flood: bool = False) -> None:
        wl = self.get_whitelist()
        protected = self._protected.get(wl.config["protect_ssh_ports"])
        if flood:
            ttl, by, source = cfg["flood_ban_ttl_seconds"], "auto-block", "auto-flood"
            note = "auto_block_floods: CRITICAL flood"
        else:
            ttl, by, source = cfg["auto_ban_ttl_seconds"], "auto-ban", "auto"
            note = (f"auto_ban_critical: rules said CRITICAL with confidence "
                    f"{threat.get('rule_confidence')} >= {cfg['auto_ban_min_confidence']}")
        try:
            threats.approve(self.store, threat["id"], by=by, source=source, ttl_seconds=ttl,
                            whitelist=wl, protected=protected, note=note)
            self.auto_bans += 1  # its decision row comes from the file (decisionlog)
            self.warn(f"{by}: {threat.get('target')} for {ttl}s "
                      f"(threat {threat['id']}, {threat.get('category')})")
            logfmt.log(by, "analyzer", ip=threat.get("target"), ttl_s=ttl, source=source,
                       threat=threat["id"], category=threat.get("category"))
        except BanRefused as e:
            if threat["id"] not in self._refused_autoban:
                self._refused_autoban.add(threat["id"])
                self.warn(f"auto-ban of {threat.get('target')} refused: {e}; threat {threat['id']} "
                          "stays pending for a person")
                logfmt.log(f"{by}_refused", "analyzer", ip=threat.get("target"),
                           threat=threat["id"], error=str(e))
        except DecisionError:
            pass  # decided by a person meanwhile
