PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo trial test test-slow bench clean browser

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

# The report tests drive a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-slow: $(STAMP) browser
	$(BIN)/python -m pytest -q -m slow --durations=15

clean:
	rm -rf $(VENV) runs
