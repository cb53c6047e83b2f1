# ccgp: the two commands a fresh machine needs are `make demo` and `make test`.
GO      ?= go
PKGS    ?= ./...
# Staticcheck runs from the module proxy, pinned, so CI and laptops agree.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.6.1
FUZZTIME ?= 30s

.PHONY: demo test test-short bench lint fuzz build proto

## demo: the whole platform in one process; ends by itself with a summary
# It runs beside a ClickHouse server as `make test` does (WITH_CLICKHOUSE,
# below), so the summary ends with the analytics ledger; with no server to
# be had (not root and not installed) it runs without analytics and says
# so. DEMOFLAGS adds flags, e.g. DEMOFLAGS='--duration 10s --json'.
DEMOFLAGS ?=
demo: NO_CLICKHOUSE = == no ClickHouse server (not installed, and not root to install it): the demo runs without analytics
demo:
	@$(WITH_CLICKHOUSE) $(GO) run ./cmd/ccgp demo $${CCGP_CLICKHOUSE:+--clickhouse $$CCGP_CLICKHOUSE} $(DEMOFLAGS)

## test: every test, with the race detector, beside a ClickHouse server
# WITH_CLICKHOUSE runs what follows it with CCGP_CLICKHOUSE set: the server
# it names, or else a throwaway one that .ci/clickhouse starts in a temp
# folder (installing Debian's package when root) and stops on the way out,
# pass or fail. With no server to be had, the analytics tests skip (and
# fail under CI=true; NO_CLICKHOUSE is the line that says so).
NO_CLICKHOUSE = == no ClickHouse server: the analytics tests skip (CI=true fails them)
WITH_CLICKHOUSE = set -e; \
	if [ -z "$$CCGP_CLICKHOUSE" ]; then \
		if .ci/clickhouse install; then \
			chdir=$$(mktemp -d); \
			trap '.ci/clickhouse stop "$$chdir"; rm -rf "$$chdir"' EXIT; \
			trap 'exit 130' INT TERM; \
			CCGP_CLICKHOUSE=$$(.ci/clickhouse start "$$chdir"); export CCGP_CLICKHOUSE; \
			echo "== ClickHouse at $$CCGP_CLICKHOUSE (.ci/clickhouse, $$chdir)"; \
		else \
			echo "$(NO_CLICKHOUSE)"; \
		fi; \
	fi;
test:
	@$(WITH_CLICKHOUSE) $(GO) test -race -timeout 25m $(PKGS)

## test-short: the fast tests only (no multi-node chains)
test-short:
	$(GO) test -short -timeout 10m $(PKGS)

## bench: the go benchmarks beside the hot code, the whole path, governance tx/s
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	$(GO) run ./cmd/ccgp bench --duration 30s
	$(GO) run ./cmd/ccgp bench gov --validators 1 --txs 20000
	$(GO) run ./cmd/ccgp bench gov --validators 4 --txs 20000

## lint: go vet and staticcheck
lint:
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

## fuzz: every fuzz target for FUZZTIME each (.ci/fuzz-one); fails if one is not listed
# FUZZ_TARGETS: package:FuzzTarget, one per line. Add a new target here.
FUZZ_TARGETS = \
	./govchain/:FuzzDecodeTx \
	./govchain/:FuzzGovTxs \
	./govchain/:FuzzDecodeChanges \
	./compensator/:FuzzCompensator \
	./mesh/amdp/:FuzzDecodePacket \
	./mesh/amdp/:FuzzDecodeBatch \
	./mesh/amdp/:FuzzDecodeReceiptBatch \
	./mesh/amdp/:FuzzDecodeFrame \
	./mesh/amdp/:FuzzDecodeSkeletonRecord \
	./mesh/:FuzzReadFrame \
	./analytics/:FuzzSinkDecode
# FUZZ: the targets to run (all by default), e.g. FUZZ=./mesh/:FuzzReadFrame.
FUZZ ?= $(FUZZ_TARGETS)
# FUZZMINIMIZETIME bounds the minimizing of each new input. Go's default,
# 60 s, with a minimizer quadratic in the input's length, let one input
# take seconds of a 10 s run: 1 s found four times the inputs
# (FuzzDecodeFrame, 10 s: 20 new inputs against 5).
FUZZMINIMIZETIME ?= 1s
# FUZZFLAGS: more go test flags, e.g. -parallel 1.
FUZZFLAGS ?=
fuzz:
	@missing=$$(grep -rhoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/^func //' | sort -u | \
		while read -r fn; do case " $(FUZZ_TARGETS) " in *":$$fn "*) ;; *) echo "$$fn";; esac; done); \
	if [ -n "$$missing" ]; then echo "fuzz targets missing from FUZZ_TARGETS in the Makefile:" $$missing >&2; exit 1; fi
	@set -e; for t in $(FUZZ); do \
		echo "== $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		GO=$(GO) .ci/fuzz-one "$${t%%:*}" "$${t#*:}" $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS); \
	done

## build: the ccgp binary in ./bin
build:
	$(GO) build -o bin/ccgp ./cmd/ccgp

## proto: regenerate the committed protobuf code (needs protoc)
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	PATH=$(CURDIR)/bin:$$PATH $(GO) generate ./govchain/ ./mesh/amdp/
