# The two commands: `make dev` (run the gateway locally against the simulator) and `make test` (everything).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: dev test bootstrap build lint unit e2e deploy-dry-run bench bench-realtime bench-ttfb bench-overhead bench-cache bench-profile

dev: bootstrap
	bash scripts/dev.sh

test: bootstrap lint unit build deploy-dry-run e2e

bootstrap:
	bash scripts/bootstrap.sh

build:
	$(ENV) bash scripts/build-worker.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
	cargo clippy --lib --target wasm32-unknown-unknown --locked -- -D warnings

unit:
	cargo test -p edge-gateway --lib --test config_files --locked
	cargo test -p edge-gateway --test fuzz --locked -- --nocapture
	cargo test -p upstream-sim --locked

e2e:
	cargo test --test e2e --locked

bench: bootstrap build
	bash bench/storm.sh

bench-realtime: bootstrap build
	bash bench/storm.sh --scenario realtime

bench-ttfb: bootstrap
	bash bench/ttfb/run.sh

bench-overhead: bootstrap
	bash bench/overhead/run.sh

bench-cache: bootstrap
	bash bench/cache/run.sh

# Where the isolate's time goes (a CPU profile under load; not a benchmark). ARGS: e.g. -c 1.
bench-profile: bootstrap
	bash bench/profile/run.sh $(ARGS)

deploy-dry-run: bootstrap
	$(ENV) wrangler deploy --dry-run --env="" --outdir dist
