#!/usr/bin/env python3
"""llm_analyzer.py - NetSentinel's threat analyzer.

Reads the loader's JSON-lines events (docs/events.md) on stdin, classifies
every connection (rules first, then an optional LLM: zhipuai, ollama, an
OpenAI-compatible endpoint or a local huggingface model) and writes
records/: pending_threats.json, dashboard_logs.json, analyzer_status.json.
`llm_analyzer.py threats list|approve|reject` decides pending threats from
a terminal. Everything is in netsentinel/analyzer/; docs/ANALYZER.md.

USAGE: sudo sh -c ".venv/bin/python -u unified_ebpf.py -i eth0 | .venv/bin/python -u llm_analyzer.py [--backend ollama]"
"""

import sys

from netsentinel.analyzer.cli import main

if __name__ == "__main__":
    sys.exit(main())
