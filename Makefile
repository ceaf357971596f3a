# NetSentinel. Two commands: `sudo make run` and `sudo make test`.
# Both install whatever is missing first (scripts/install.sh, idempotent).
PY      := .venv/bin/python
IFACE   ?=
PYTEST_ARGS ?=

.PHONY: deps install uninstall run test demo help

help:
	@echo "sudo make run  [IFACE=eth0]  install if needed, start loader | analyzer + dashboard"
	@echo "sudo make test               install if needed, run the whole test suite (kernel tests too)"
	@echo "sudo make demo               the whole system in a namespace lab (Ctrl-C cleans up)"
	@echo "sudo make install            only install (plus systemd units where systemd runs)"
	@echo "sudo make uninstall          remove the systemd units"

# deps: what run/test/demo need; install adds the systemd units (only where
# systemd runs), which a test run has no business creating.
deps:
	@bash scripts/install.sh

install: deps
	@bash scripts/systemd/units.sh install

uninstall:
	@bash scripts/systemd/units.sh uninstall

run: deps
	@bash scripts/run.sh $(IFACE)

test: deps
	$(PY) -m pytest tests/ -ra $(PYTEST_ARGS)

demo: deps
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Benchmarks (docs/benchmarks.md): every one, then each issue target beside its measurement (bench/targets.py); the seven issue-target ones alone take ~10 minutes.
.PHONY: bench
bench: deps
	.venv/bin/python bench/run_all.py
