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

# The suites run the kernels an AVX2-only CPU runs (oneDNN and ATen capped at AVX2), also on machines
# with AVX-512: oneDNN's AVX2 kernels are where a native crash was found (bench/onednn_avx2_crash.py).
# Ray workers started by the tests inherit these variables.
AVX2 := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

test: $(STAMP) browser
	$(AVX2) $(BIN)/python -m pytest -q -m "not slow" --durations=15

test-slow: $(STAMP) browser
	$(AVX2) $(BIN)/python -m pytest -q -m slow --durations=15

clean:
	rm -rf $(VENV) runs
