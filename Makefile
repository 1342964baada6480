PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo trial test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/ncsweep run sweeps/specs/demo.yaml --out runs/demo
	$(BIN)/ncsweep report runs/demo
	@echo "results: runs/demo/rows (Parquet), runs/demo/trials.parquet; report: runs/demo/report/report.html"

trial: $(STAMP)
	$(BIN)/python -m nccore.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
