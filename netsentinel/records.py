"""The records/ contract: the name of every file under records/.

Only this module and store.py name files there (docs/ARCHITECTURE.md, "The
records/ contract", describes each one; tests/test_records.py checks that
every name below has its row). Names, not paths: RecordsStore.path() turns a
name into a path inside whichever records/ directory a process was given.
"""

from __future__ import annotations

LOCK_NAME = ".lock"  # flock'ed by every writer for read-modify-write cycles
LOADER_LOCK_NAME = ".loader.lock"  # held by the one loader of a records directory

# Commands for the loader, and the ones it refused.
BAN_COMMANDS = "ban_commands.json"  # list of {action, ip, reason?, ttl_seconds?, ...}
BAN_COMMANDS_REJECTED = "ban_commands.rejected.json"  # list of {command, error, rejected_at, by}
RULE_COMMANDS = "rule_commands.json"  # list of {action: add_rule|remove_rule, rule?, id?}
RULE_COMMANDS_REJECTED = "rule_commands.rejected.json"
CONTAIN_COMMANDS = "contain_commands.json"  # list of {action: contain|release, pid?, exe?, ...}
CONTAIN_COMMANDS_REJECTED = "contain_commands.rejected.json"
COMMAND_FILES = (BAN_COMMANDS, RULE_COMMANDS, CONTAIN_COMMANDS)  # root:netsentinel 0660 (fsguard)
# Append-only drop directories beside them: one file per command (netsentinel/dropdir.py).
DROP_DIRS = tuple(name.rsplit(".json", 1)[0] + ".d" for name in COMMAND_FILES)

# What the loader enforces (written by the loader only).
BANNED_IPS = "banned_ips.json"  # {cidr: {reason, source, banned_at, expires_at, drops, last_drop_at}}
FILTER_RULES = "filter_rules.json"  # {"rules": [rule + hits, created_at, expires_at]}
CONTAINED = "contained.json"  # {"pid:N"|"exe:/path": {pid?, exe, dev, ino, reason, expires_at, blocked, ...}}

# What waits for a person.
PENDING_THREATS = "pending_threats.json"
RULE_PROPOSALS = "rule_proposals.json"

# The analyzer's output and settings.
DASHBOARD_LOGS = "dashboard_logs.json"
ANALYZER_REJECTED = "analyzer_rejected.jsonl"  # input lines the analyzer refused, with the reason
HISTORY = "analyzed_events.jsonl"  # append-only, rotated to HISTORY.1..HISTORY_KEEP
HISTORY_MAX_BYTES = 50 * 1024 * 1024
HISTORY_KEEP = 3
LLM_CONFIG = "llm_config.json"
# The event store's default SQLite engine (netsentinel/eventstore/), with its
# WAL sidecars events.sqlite3-wal and -shm; searched by `netsentinel events`.
EVENTS_DB = "events.sqlite3"

# Heartbeats.
LOADER_STATUS = "loader_status.json"
ANALYZER_STATUS = "analyzer_status.json"
SUPERVISOR_STATUS = "supervisor_status.json"  # the pipeline supervisor's heartbeat (netsentinel/service)

# Stack visibility (loader only): drop reasons over time, top drop sites,
# recent TCP health (docs/STACK.md).
STACK = "stack.json"

# The CrowdSec machine side: which decisions this host pushed (loader only).
CROWDSEC_MACHINE = "crowdsec_machine.json"

# Dashboard: its sign-in token (root-only, created at first start) and the
# audit trail of every decision made there.
DASHBOARD_TOKEN = ".dashboard_token"
AUDIT = "audit.jsonl"
# What an unprivileged dashboard asks root to do (approve, reject, whitelist,
# settings, audit notes): a drop directory (root:netsentinel 2770) the analyzer
# consumes (netsentinel/analyzer/dashcmds.py), and the commands it refused.
DASHBOARD_COMMANDS = "dashboard_commands.d"
DASHBOARD_COMMANDS_REJECTED = "dashboard_commands.rejected.json"

# stderr of the processes the lab harness starts (testing.lab.start_pipeline,
# `make demo`); only people read them.
LOADER_LOG = "loader.log"
ANALYZER_LOG = "analyzer.log"
DASHBOARD_LOG = "dashboard.log"

FILES = (BAN_COMMANDS, BAN_COMMANDS_REJECTED, RULE_COMMANDS, RULE_COMMANDS_REJECTED, BANNED_IPS,
         CONTAIN_COMMANDS, CONTAIN_COMMANDS_REJECTED, CONTAINED, FILTER_RULES, PENDING_THREATS, RULE_PROPOSALS, DASHBOARD_LOGS,
         ANALYZER_REJECTED, HISTORY, EVENTS_DB, LLM_CONFIG, LOADER_STATUS, ANALYZER_STATUS, SUPERVISOR_STATUS, STACK,
         CROWDSEC_MACHINE, DASHBOARD_TOKEN, AUDIT, DASHBOARD_COMMANDS, DASHBOARD_COMMANDS_REJECTED, LOADER_LOG, ANALYZER_LOG,
         DASHBOARD_LOG)


def history_files() -> list[str]:
    """The history file and its rotated copies, newest first."""
    return [HISTORY] + [f"{HISTORY}.{i}" for i in range(1, HISTORY_KEEP + 1)]
