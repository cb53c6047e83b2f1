# ccgp: the two commands a fresh machine needs are `make demo` and `make test`.
GO      ?= go
PKGS    ?= ./...
# Staticcheck runs from the module proxy, pinned, so CI and laptops agree.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.6.1
FUZZTIME ?= 30s

.PHONY: demo test test-short bench lint fuzz build proto

## demo: the whole platform in one process; ends by itself with a summary
demo:
	$(GO) run ./cmd/ccgp demo

## test: every test, with the race detector
test:
	$(GO) test -race -timeout 25m $(PKGS)

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

## fuzz: each decoder's fuzz target for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTx$$' -fuzztime $(FUZZTIME) ./govchain/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePacket$$' -fuzztime $(FUZZTIME) ./mesh/amdp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZTIME) ./mesh/amdp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeReceiptBatch$$' -fuzztime $(FUZZTIME) ./mesh/amdp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) ./mesh/amdp/
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./mesh/

## build: the ccgp binary in ./bin
build:
	$(GO) build -o bin/ccgp ./cmd/ccgp

## proto: regenerate the committed protobuf code (needs protoc)
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	PATH=$(CURDIR)/bin:$$PATH $(GO) generate ./govchain/ ./mesh/amdp/
