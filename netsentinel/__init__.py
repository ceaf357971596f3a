"""NetSentinel: shared logic behind the unified_ebpf.py, llm_analyzer.py,
dashboard.py and user_whitelist.py entry points."""

__version__ = "0.1.0"
