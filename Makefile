# Developer commands. CI (.ci/run) runs the same checks in a fresh virtual environment, lint first.
#   make install   editable install with the test and vLLM extras (vLLM pulls torch, ~4.5 GB)
#   make lint      rustfmt, ruff, clippy, mypy --strict, import-linter's layer contracts
#   make fmt       rewrite: cargo fmt, ruff's fixes and formatter
#   make test      cargo test on the core, then the README's pytest command
#   make bench     every benchmark in its quick (smoke) size, on the CPU; results in bench-results/
#   make bench-full  the sizes behind benches/RESULTS.md (tens of minutes on 2 cores)
PY ?= python
OUT ?= bench-results
PY_DIRS = python tests benches

.PHONY: install lint fmt test bench bench-full

install:
	$(PY) -m pip install -e ".[test,vllm]"

lint:
	cargo fmt --all --check
	ruff check $(PY_DIRS)
	ruff format --check $(PY_DIRS)
	cargo clippy --workspace --all-targets -- -D warnings
	$(PY) -m mypy
	lint-imports

fmt:
	cargo fmt --all
	ruff check --fix $(PY_DIRS)
	ruff format $(PY_DIRS)

test:
	cargo test -p autellix-core
	$(PY) -m pytest

bench:
	autellix bench --out $(OUT)/sim
	$(PY) benches/bench_binding.py --quick --json $(OUT)/binding.json
	$(PY) benches/bench_vllm_replay.py --quick --no-progress --json $(OUT)/vllm_replay.json
	$(PY) benches/bench_serve.py --quick --json $(OUT)/serve.json
	$(PY) benches/bench_serve_replay.py --quick --json $(OUT)/serve_replay.json
	$(PY) benches/bench_swap.py --quick --json $(OUT)/swap.json

bench-full:
	cargo bench -p autellix-core --bench core_ops
	autellix bench --full --experiment all --out $(OUT)/sim-full
	$(PY) benches/bench_binding.py --json $(OUT)/binding.json
	$(PY) benches/bench_vllm_replay.py --json $(OUT)/vllm_replay.json
	$(PY) benches/bench_serve.py --json $(OUT)/serve.json
	$(PY) benches/bench_serve_replay.py --json $(OUT)/serve_replay.json
