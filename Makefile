# kvpush: `make demo` shows it working end to end, `make test` proves it.
# Both install what they need (registry-fixtures/install-deps.sh).

CARGO ?= cargo
DEMO_DIR ?= demo
DEMO_SCALE ?= 64MiB
DEMO_TAG ?= devel

.PHONY: all build deps demo test lint bench man clean

all: build

deps:
	registry-fixtures/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

test: deps
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: build
	registry-fixtures/demo.sh "$(DEMO_DIR)" "$(DEMO_SCALE)" "$(DEMO_TAG)"

# kvpush(1) from the clap definitions (`kvpush man`); generated, not committed.
man: deps
	mkdir -p docs
	$(CARGO) run --quiet --bin kvpush -- man > docs/kvpush.1.tmp
	mv docs/kvpush.1.tmp docs/kvpush.1

BENCH_ARGS ?=

bench: deps
	$(CARGO) bench --bench push -- $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf "$(DEMO_DIR)"
