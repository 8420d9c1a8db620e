# herald — the Makefile wraps CMake (presets in CMakePresets.json) and the server harness.
#
#   make demo        install what is missing, build, start the servers, run the demo
#   make chat-demo   the same for the online chat (two processes, one Redis bus)
#   make messages-demo  the messages API and a stream of its events (follow, replay)
#   make test        install, build (coverage + asan + fuzz), start the servers, run every
#                    test, the sanitizer run and valgrind on the unit tests, a short run of
#                    each fuzz target, stop the servers
#   make coverage    the test suite on the coverage build + gcovr HTML and threshold
#   make bench       the benchmarks (docs/bench.md); make limits: the machine's raw limits,
#                    written to docs/limits.md
#   make fuzz        build the libFuzzer targets (clang) and run each for FUZZ_SECONDS
#                    (tests/fuzz/README.md)
#   make topology    regenerate docs/topology.dot and docs/topology.svg (herald-admin topology)
#   make plan-audit  the SQLite plan of every SQL statement on week-old tables (make test: --quick)
#
# Variables: JOBS (parallel build jobs), COVERAGE_MIN (line coverage threshold, percent),
# FUZZ_SECONDS (make fuzz, per target), FUZZ_SMOKE_SECONDS (make test's fuzz smoke, per target).

JOBS         ?= $(shell nproc 2>/dev/null || echo 2)
COVERAGE_MIN ?= 80
FUZZ_SECONDS ?= 60
export FUZZ_SMOKE_SECONDS ?= 5
SERVERS      := scripts/servers.sh
export HD_SOURCE_DIR := $(CURDIR)

.PHONY: all deps build configure-% build-% test test-unit test-asan test-valgrind coverage \
        tutorial demo bench limits fuzz build-fuzz format format-check servers-up servers-down \
        install clean help topology plan-audit

all: build

help:
	@sed -n '1,17p' Makefile

deps:
	@scripts/deps.sh

configure-%:
	@cmake --preset $* >/dev/null

build-%: configure-%
	@cmake --build build/$* -j $(JOBS)

build: deps build-dev

# The fuzz build makes only the fuzz targets (the preset's build target), not the tree.
build-fuzz: configure-fuzz
	@cmake --build build/fuzz -j $(JOBS) --target fuzz

# The whole suite, as CI runs it (.ci/run calls exactly this). --cluster: the three-node
# RabbitMQ cluster too, started once for the tests labelled cluster.
test: deps build-coverage build-asan build-fuzz
	@$(SERVERS) run --cluster -- scripts/run_tests.sh all

# Unit tests only: no servers needed.
test-unit: deps build-dev
	@ctest --test-dir build/dev -L unit --output-on-failure -j $(JOBS)

# The SQLite query plan of every SQL statement in src/, on tables shaped like a service's after
# a week (scripts/plan_audit/README.md); make test runs it with --quick.
plan-audit: deps build-dev
	@scripts/plan_audit/run.sh --build-dir build/dev --work build/plan-audit

test-asan: deps build-asan
	@ctest --test-dir build/asan -L unit --output-on-failure -j $(JOBS)

test-valgrind: deps build-dev
	@scripts/run_tests.sh valgrind build/dev

coverage: deps build-coverage
	@$(SERVERS) run --cluster -- scripts/run_tests.sh coverage

tutorial: deps build-dev
	@$(SERVERS) run --cluster -- ctest --test-dir build/dev -L tutorial --output-on-failure

demo: deps build-dev
	@$(SERVERS) run -- scripts/demo.sh build/dev

# The online chat: two herald-chat processes on one Redis bus (scripts/chat-demo.sh;
# CHAT_SERVE=--serve keeps them up for a browser on :8090 and :8091).
.PHONY: chat-demo
chat-demo: deps build-dev
	@$(SERVERS) run -- scripts/chat-demo.sh build/dev $(CHAT_SERVE)

# The messages API of herald-users on PostgreSQL and a RabbitMQ stream of its events, followed
# and replayed into two projections that must agree (scripts/messages-demo.sh).
.PHONY: messages-demo
messages-demo: deps build-dev
	@$(SERVERS) run -- scripts/messages-demo.sh build/dev

bench: deps build-release
	@$(SERVERS) run --cluster -- scripts/bench.sh build/release

# The machine's raw limits (disk, SQLite, RabbitMQ; about a minute), into docs/limits.md.
limits: deps build-release
	@$(SERVERS) run -- build/release/bench-limits --out docs/limits.md

# Each fuzz target for FUZZ_SECONDS on a copy of its corpus (build/fuzz/corpus-<x>).
fuzz: deps build-fuzz
	@scripts/fuzz.sh run $(FUZZ_SECONDS)

# docs/topology.dot and .svg: the example system's topology, from the declarations
# (herald-admin topology --dot; unit.admin_topology fails when the .dot is stale).
# Run outside a configured .env so that HD_USERS_EXCHANGE/HD_NOTIFICATIONS_QUEUE/HD_QUEUE_TYPE keep their defaults.
topology: deps build-dev
	@cd build/dev && env -u HD_USERS_EXCHANGE -u HD_NOTIFICATIONS_QUEUE -u HD_QUEUE_TYPE -u HD_DELIVERY_LIMIT ./herald-admin topology --dot > $(CURDIR)/docs/topology.dot
	@dot -Tsvg docs/topology.dot > docs/topology.svg
	@echo "topology: docs/topology.dot docs/topology.svg"

servers-up: deps
	@$(SERVERS) up

servers-down:
	@$(SERVERS) down

install: build-release
	@cmake --install build/release $(if $(PREFIX),--prefix $(PREFIX))

format:
	@find src tests tutorial bench -name '*.[ch]' -print0 | xargs -0 -r clang-format -i

format-check:
	@find src tests tutorial bench -name '*.[ch]' -print0 | xargs -0 -r clang-format --dry-run -Werror

clean:
	@rm -rf build
