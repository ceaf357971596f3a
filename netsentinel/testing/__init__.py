"""Harness shared by tests/, bench/, ml/ and scripts/demo.py: the namespace
lab, the LLM stand-in server and the dashboard browser driver. Not used at
run time by any of the three processes."""
