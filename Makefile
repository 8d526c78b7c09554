# The newcomer's commands (README.md): `make test` and `make demo`.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# `make lint` checks the C++ files changed since LINT_BASE (default: uncommitted changes).
LINT_BASE ?= HEAD

.PHONY: all deps models configure build test demo format lint clean

all: build

deps:
	scripts/install-deps

models:
	scripts/fetch-models

configure:
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: deps models
	$(MAKE) build
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)

# Grows with each issue (scripts/demo says what it shows today).
demo: deps models
	$(MAKE) build
	BUILD_DIR=$(BUILD_DIR) scripts/demo

SOURCES = git ls-files -- '*.h' '*.cc' '*.cu' '*.cuh'
format:
	$(SOURCES) | xargs -r clang-format -i

lint: configure
	@files=$$( (git diff --name-only --diff-filter=d $(LINT_BASE) -- '*.cc'; \
	            git ls-files --others --exclude-standard -- '*.cc') | sort -u); \
	if [ -z "$$files" ]; then echo "lint: no changed .cc files since $(LINT_BASE)"; exit 0; fi; \
	echo "$$files" | xargs -r -P$(JOBS) -n1 clang-tidy -p $(BUILD_DIR) --quiet

clean:
	rm -rf $(BUILD_DIR)
