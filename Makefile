# Quanyu — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
PLUGINS := $(filter-out internal,$(notdir $(wildcard plugins/*)))
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/quanyu/quanyu/internal/version.Version=$(VERSION)
# Privileged tests (AF_PACKET, network namespaces) need root; CI runs as root.
TEST_TIMEOUT ?= 40m

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/quanyu and the plugins into bin/plugins/
	@command -v $(GO) >/dev/null || { echo "Quanyu is built with Go 1.26 or later, and $(GO) is not on PATH: install it (https://go.dev/dl/, or your distribution's golang package) and run make again"; exit 1; }
	@v=$$($(GO) env GOVERSION | sed 's/^go//'); case "$$v" in 1.2[6-9]*|1.[3-9][0-9]*|[2-9].*) ;; *) echo "Quanyu needs Go 1.26 or later; $(GO) is $$v: install a newer Go (https://go.dev/dl/) and run make again"; exit 1;; esac
	@mkdir -p $(BIN)/plugins
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/quanyu ./cmd/quanyu
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o $(BIN)/plugins/quanyu-$$p ./plugins/$$p"; \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/plugins/quanyu-$$p ./plugins/$$p || exit 1; \
	done

.PHONY: otelcol
otelcol: ## Build bin/otelcol, the stock OpenTelemetry Collector (OTLP only) that tests put before analysis
	@mkdir -p $(BIN)
	$(GO) build -C test/otelcol -o $(CURDIR)/$(BIN)/otelcol .

.PHONY: deps
deps: ## Install what the tests use that this machine lacks (apt-get, as root)
	@.ci/deps

.PHONY: test
test: deps build ## Run every test (as root, the privileged ones too)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: race
race: ## Run the tests of the concurrent parts with the race detector
	$(GO) test -race -count=1 ./sdk/... ./core/... ./plugins/...

GENERATED := sdk/internal/pb mix/mixpb plugins/capture-ebpf/internal/kern

.PHONY: generate
generate: ## Regenerate protobuf code and the eBPF object (pinned generators from go.mod; needs clang, libbpf-dev)
	$(GO) run ./internal/tools/protogen -I sdk/proto -out . quanyu/plugin/v1/plugin.proto
	$(GO) run ./internal/tools/protogen -I mix/proto -out . quanyu/mix/v1/mix.proto
	@command -v clang >/dev/null || { echo "make generate needs clang and libbpf-dev for the eBPF program (apt-get install clang llvm libbpf-dev)"; exit 1; }
	cd plugins/capture-ebpf/internal/kern && $(GO) generate ./...

.PHONY: ui
ui: ## Rebuild the analysis web UI into analysis/ui/dist (npm; dist is committed, so go build needs no Node)
	cd analysis/ui && npm ci && npm run build

.PHONY: check-generated
check-generated: generate ## Fail if the committed generated code differs from a fresh generation
	@git diff --exit-code -- $(GENERATED) || { echo "generated code is stale: run make generate and commit"; exit 1; }

.PHONY: lint
lint: ## gofmt and go vet (the test collector's module too)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -C test/otelcol ./...

.PHONY: bench
bench: ## Run the benchmarks (results and commands are recorded in bench/RESULTS.md)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s); findings land in testdata/fuzz
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir=$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "fuzz $$dir $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} ./$$dir; \
		done; \
	done

.PHONY: demo
demo: build ## Everything on this host: mix, analysis, an agent and a lab of test hosts; UI on 127.0.0.1:8080 (as root)
	@if [ "$$(id -u)" != 0 ]; then echo "make demo creates network namespaces and loads eBPF programs: run it as root (sudo make demo)"; exit 1; fi
	@command -v ip >/dev/null || { echo "installing iproute2 (the lab's namespaces need ip)"; apt-get install -y -qq iproute2 || { echo "install iproute2 (the ip command), then run make demo again"; exit 1; }; }
	$(BIN)/quanyu up --lab

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
