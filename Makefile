# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := data/sets/demo
PYTEST_ARGS ?=
# Two workers, a module (or a unit tests/conftest.py shares) on one of them; `PYTEST_ARGS=-n0`
# runs serially. OpenMP threads (LightGBM's) sleep instead of spinning while they wait: with two
# workers training at once, spinning threads burnt a third of the suite's CPU (23 against 17 min).
XDIST  := -n 2 --dist loadfile --no-loadscope-reorder
OMP    := OMP_WAIT_POLICY=PASSIVE

.PHONY: install system-deps demo test test-fast bench clean

# uv installs what pip would (the same constraints in pyproject.toml) with parallel
# downloads: a fresh venv in 67 s from an empty cache against pip's 150-183 s from a warm
# one. Bytecode is compiled at install, as pip does, so no test process compiles it.
# --system-certs: the machine's certificate store, which pip gets from /etc/pip.conf (uv
# does not read it; without SSL_CERT_FILE set it cannot verify this network's TLS). Should
# uv fail all the same, pip installs the same thing, slower.
UV     := uv==0.13.9

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(UV)
	$(BIN)/uv pip install --quiet --system-certs --python $(BIN)/python --compile-bytecode -e '.[test]' \
		|| $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/eddy simulate --out $(DEMO)
	$(BIN)/eddy validate $(DEMO)
	$(BIN)/eddy train $(DEMO)
	$(BIN)/eddy predict $(DEMO) --as-of 2026-02-28T12:00:00 --out data/sets/demo-open-parcels.parquet
	$(BIN)/eddy score-customers $(DEMO)
	@echo "open: http://127.0.0.1:3000/review (customers at risk), http://127.0.0.1:3000/docs (API), reports/ (training report), '$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db' (runs); every answer is logged to mlruns/eddy.db: '$(BIN)/eddy monitor DIR' on a later export fills http://127.0.0.1:3000/review/monitor"
	$(BIN)/eddy serve --port 3000

# Chromium for the review-page tests: installed with apt, or the command to run is printed.
system-deps:
	./scripts/system-deps

test: $(STAMP) system-deps
	$(OMP) $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# Skip the slow end-to-end tests locally; CI runs everything with `make test`.
test-fast: $(STAMP)
	$(OMP) $(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/simulate_1m.py
	$(BIN)/python benchmarks/features_scale.py

clean:
	rm -rf $(VENV) data/sets build *.egg-info
