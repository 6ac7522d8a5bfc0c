# keyhole — build, test and run targets. `make test` is what CI runs.
GO       ?= go
BIN      := bin/keyhole
PKGS     := ./...
FUZZTIME ?= 20s

.PHONY: all build test lint fuzz bench demo run clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/keyhole

# The whole suite under the race detector: unit, fuzz seed corpora (run as
# ordinary tests), and end-to-end tests that build and drive the real binary.
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Each fuzz target for a short, fixed time.
fuzz:
	@set -e; for t in $$($(GO) test -list '^Fuzz' $(PKGS) 2>/dev/null | grep -E '^(Fuzz|ok)' | awk '/^Fuzz/{f=f" "$$1} /^ok/{if(f!=""){print $$2":"f}; f=""}'); do \
		pkg=$${t%%:*}; for f in $${t#*:}; do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo: build
	./$(BIN) demo

run: demo

clean:
	rm -rf bin
