# NetSentinel. Two commands: `sudo make run` and `sudo make test`.
# Both install whatever is missing first (scripts/install.sh, idempotent).
PY      := .venv/bin/python
IFACE   ?=
PYTEST_ARGS ?=

.PHONY: install run test demo help

help:
	@echo "sudo make run  [IFACE=eth0]  install if needed, start loader | analyzer + dashboard"
	@echo "sudo make test               install if needed, run the whole test suite (kernel tests too)"
	@echo "sudo make demo               the whole system in a namespace lab (Ctrl-C cleans up)"
	@echo "sudo make install            only install"

install:
	@bash scripts/install.sh

run: install
	@bash scripts/run.sh $(IFACE)

test: install
	$(PY) -m pytest tests/ -ra $(PYTEST_ARGS)

demo: install
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Benchmarks (docs/benchmarks.md): drop rate, ban latency (file and dashboard click), event capture, analyzer; ~8 minutes.
.PHONY: bench
bench: install
	.venv/bin/python bench/run_all.py
