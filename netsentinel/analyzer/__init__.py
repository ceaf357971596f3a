"""The threat analyzer behind llm_analyzer.py: rules first (rules.py,
scan.py), an LLM second (prompt.py, backends.py, worker.py), verdicts
(verdict.py) written to records/ (sinks.py), driven by pipeline.py and the
command line in cli.py. docs/ANALYZER.md describes it for people."""
