# keyhole — build, test and run targets. `make test` is what CI runs.
GO       ?= go
BIN      := bin/keyhole
PKGS     := ./...
FUZZTIME ?= 20s

.PHONY: all build test test-clients test-ui ui-screenshots lint fuzz bench bench-audit bench-console bench-store demo run clean

all: build

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X github.com/keyhole-dev/keyhole/server.Version=$(VERSION)" -o $(BIN) ./cmd/keyhole

# The whole suite under the race detector: unit, fuzz seed corpora (run as
# ordinary tests), and end-to-end tests that build and drive the real binary.
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

# The official MCP clients (TypeScript SDK over stdio and streamable HTTP,
# MCP Inspector CLI) against the built binary; versions pinned in
# clients/package-lock.json. Needs node and npm.
test-clients: build
	cd clients && npm ci --no-audit --no-fund --ignore-scripts && node run.mjs ../$(BIN)

# The browser console end to end in headless Chromium, driven from Go with
# chromedp (cmd/keyhole/ui_browser_test.go, build tag browser); not part of
# make test. Needs Chromium: Debian's chromium (apt-get install -y chromium)
# or KEYHOLE_CHROMIUM. A failing step leaves a screenshot in bin/ui-shots/.
CHROMIUM ?= $(or $(KEYHOLE_CHROMIUM),$(shell command -v chromium || command -v chromium-browser || command -v google-chrome))
test-ui:
	@if [ -z "$(CHROMIUM)" ] || [ ! -x "$(CHROMIUM)" ]; then \
		echo "make test-ui: Chromium is not installed; install it (apt-get install -y chromium) or set KEYHOLE_CHROMIUM" >&2; exit 1; fi
	KEYHOLE_CHROMIUM=$(CHROMIUM) $(GO) test -tags browser -race -count=1 -timeout 10m -run '^TestConsoleInChromium$$' ./cmd/keyhole

# The README's screenshots of the console (docs/console-*.png), taken by
# the test-ui run.
ui-screenshots:
	@mkdir -p docs
	KEYHOLE_UI_DOCS=$(abspath docs) $(MAKE) test-ui

# lint also cross-builds the CLI for $(CROSS).
# govulncheck runs when it is installed (go install golang.org/x/vuln/cmd/govulncheck@v1.9.0)
# and its database is reachable; a machine without network skips it with a note.
# Cross-builds: keyhole must build where its users are (macOS, Windows).
CROSS    := darwin/arm64 windows/amd64

lint:
	$(GO) vet $(PKGS)
	@set -e; for p in $(CROSS); do echo "build ./cmd/keyhole for $$p"; GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/keyhole; done
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@vc=$$(command -v govulncheck || echo $$($(GO) env GOPATH)/bin/govulncheck); \
	if [ -x "$$vc" ]; then \
		out=$$($$vc ./... 2>&1); rc=$$?; \
		if echo "$$out" | grep -q "fetching vulnerabilities"; then echo "govulncheck: vulnerability database unreachable; skipped"; \
		else echo "$$out"; exit $$rc; fi; \
	else echo "govulncheck not installed; skipped"; fi
	@sc=$$(command -v staticcheck || echo $$($(GO) env GOPATH)/bin/staticcheck); \
	if [ -x "$$sc" ]; then echo "staticcheck ./..."; $$sc ./...; \
	else echo "staticcheck not installed; skipped"; fi

# Each fuzz target for a short, fixed time.
fuzz:
	@set -e; for t in $$($(GO) test -list '^Fuzz' $(PKGS) 2>/dev/null | awk '/^Fuzz/{f=f","$$1} /^ok/{if(f!=""){print $$2 f}; f=""}'); do \
		pkg=$${t%%,*}; for f in $$(echo $${t#*,} | tr ',' ' '); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# Micro-benchmarks of the hot path's pieces, then the end-to-end comparison
# of direct, bare MCP and keyhole (cmd/keyhole-bench), then its growth
# phase (BENCH_GROWTH calls through the broker, the audit log padded to
# BENCH_FILL records, a restart and the audit commands), printed as one
# table. BENCHTIME sets each micro-benchmark's time; BENCH_ARGS passes flags
# to keyhole-bench (e.g. BENCH_ARGS='--rounds 3 --duration 500ms'). See BENCHMARKS.md.
BENCHTIME    ?= 200ms
BENCH_ARGS   ?=
BENCH_GROWTH ?= 50000
BENCH_FILL   ?= 1000000
bench: build
	@echo "micro-benchmarks (-benchtime $(BENCHTIME))" >&2
	@$(GO) test -run '^$$' -bench '^(BenchmarkDecide|BenchmarkCanonicalPath|BenchmarkProjection|BenchmarkScrub|BenchmarkAppend)$$' \
		-benchmem -benchtime $(BENCHTIME) -count 1 ./policy ./tools ./tools/scrub ./server/audit > bin/bench-micro.txt \
		|| { cat bin/bench-micro.txt; exit 1; }
	@$(GO) run ./cmd/keyhole-bench --keyhole $(BIN) --micro bin/bench-micro.txt \
		--growth $(BENCH_GROWTH) --fill $(BENCH_FILL) $(BENCH_ARGS)

# The audit log's readers and start over a log of AUDIT_N records, in
# process (writing a million records takes minutes; AUDIT_DIR keeps them
# between runs). Not part of make test.
AUDIT_N   ?= 1000000
AUDIT_DIR ?= bin/audit-bench
bench-audit:
	@mkdir -p $(AUDIT_DIR)
	KEYHOLE_AUDIT_LARGE_N=$(AUDIT_N) KEYHOLE_AUDIT_LARGE_DIR=$(abspath $(AUDIT_DIR)) \
		$(GO) test -run '^$$' -bench '^BenchmarkLargeLog$$' -benchmem -benchtime 5x -timeout 60m ./server/audit

# The console's pages over an audit log of CONSOLE_N calls, in process
# (writing a million calls takes minutes; CONSOLE_DIR keeps them between
# runs). Not part of make test.
CONSOLE_N   ?= 1000000
CONSOLE_DIR ?= bin/console-bench
bench-console:
	@mkdir -p $(CONSOLE_DIR)
	KEYHOLE_CONSOLE_BENCH_N=$(CONSOLE_N) KEYHOLE_CONSOLE_BENCH_DIR=$(abspath $(CONSOLE_DIR)) \
		$(GO) test -run '^$$' -bench '^BenchmarkPages$$' -benchtime 20x -timeout 60m ./server/console

# The PostgreSQL store against the embedded one, and 1-3 brokers on one
# PostgreSQL (a throwaway cluster, fsync on; needs the postgresql package).
# BENCH_STORE_ARGS passes flags (e.g. '--rounds 3 --duration 1s'). Not part
# of make test.
BENCH_STORE_ARGS ?=
bench-store: build
	@$(GO) run ./cmd/keyhole-bench store --keyhole $(abspath $(BIN)) $(BENCH_STORE_ARGS)

demo: build
	./$(BIN) demo

run: demo

clean:
	rm -rf bin
