# libkrun.so.1 in Rust: build, install, test.
#
#   make                  release build of libkrun.so.1, header check, target/libkrun.pc,
#                         target/examples/chroot_vm
#   make install          PREFIX=/usr/local LIBDIR=$(PREFIX)/lib INCLUDEDIR=$(PREFIX)/include DESTDIR=
#   make uninstall        the same variables
#   make test             unit tests, harness tests, install check, ABI tests, end-to-end tests
#                         (lab or direct); ends with the lab's freeze count and the time lost
#   make bench            ours against upstream libkrun (built from its crate into
#                         target/bench-ref), interleaved, in one lab run (or directly)
#   make lint             cargo fmt --check and clippy -D warnings
#   make fuzz             the devices' fuzz harnesses with FUZZ_CASES cases each (default 20000)
#   make header           regenerate include/libkrun.h with cbindgen
#   make demo             run examples-c/chroot_vm with a busybox root (here, or in the lab)
#   make clean
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR ?=
CARGO ?= cargo
CC ?= cc
CXX ?= c++
CFLAGS ?= -O2 -g -Wall -Wextra -Werror

# The version lives in one place: [workspace.package] in Cargo.toml.
VERSION := $(shell sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
ifeq ($(VERSION),)
$(error cannot read the version from [workspace.package] in Cargo.toml)
endif

TARGET := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
LIB := $(TARGET)/release/libkrun.so
HEADER := include/libkrun.h
PC_IN := pkgconfig/libkrun.pc.in
PC := $(TARGET)/libkrun.pc
EXAMPLE := $(TARGET)/examples/chroot_vm
STAGE := $(TARGET)/stage
KRUNLAB := tests/lab/krunlab
export CARGO_TARGET_DIR := $(TARGET)

.PHONY: all lib header-check header pc examples install uninstall test test-unit \
	test-harness test-install test-abi test-e2e bench posix lint demo clean fuzz FORCE

all: lib header-check pc examples

lib:
	$(CARGO) build --release -p krun

# The exact "committed header == cbindgen output" check is crates/krun/tests/header.rs (part
# of `make test`); here, cheaply: the header compiles on its own as C and C++, and it declares
# exactly the krun_* functions (upstream's names) and krunrs_* functions (this
# implementation's extensions, tests/abi/extensions.txt) the library exports.
header-check: lib
	@$(CC) -fsyntax-only -Wall -Wextra -Werror -x c $(HEADER)
	@$(CXX) -fsyntax-only -Wall -Wextra -Werror -x c++ $(HEADER)
	@diff -u --label "declared in $(HEADER)" --label "exported by libkrun.so" \
		<($(CC) -E -P -x c $(HEADER) | grep -oE '\bkrun(rs)?_[a-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u) \
		<(nm -D --defined-only $(LIB) | awk '$$3 ~ /^krun(rs)?_/ {print $$3}' | sort -u) \
		|| { echo "header-check: $(HEADER) and the library disagree (run 'make header'?)"; exit 1; }
	@echo "header-check: $(HEADER) compiles and matches the library's exports"

header:
	UPDATE_HEADER=1 $(CARGO) test -p krun --test header

# Regenerated on every run: it depends on PREFIX/LIBDIR/INCLUDEDIR, which change per call.
pc: $(PC)
$(PC): $(PC_IN) FORCE
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@.tmp
	@! grep -n '@[A-Z]*@' $@.tmp || { echo "pc: unreplaced placeholder in $<"; exit 1; }
	mv $@.tmp $@

examples: $(EXAMPLE)
$(EXAMPLE): examples-c/chroot_vm.c $(HEADER) lib
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=c11 -D_GNU_SOURCE -Iinclude -o $@ $< -L$(dir $(LIB)) -lkrun

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 0755 $(LIB) $(DESTDIR)$(LIBDIR)/libkrun.so.$(VERSION)
	ln -sfn libkrun.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libkrun.so.$(MAJOR)
	ln -sfn libkrun.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libkrun.so
	install -m 0644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/libkrun.h
	install -m 0644 $(PC) $(DESTDIR)$(LIBDIR)/pkgconfig/libkrun.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libkrun.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libkrun.so.$(MAJOR) \
		$(DESTDIR)$(LIBDIR)/libkrun.so $(DESTDIR)$(INCLUDEDIR)/libkrun.h \
		$(DESTDIR)$(LIBDIR)/pkgconfig/libkrun.pc

# Every part runs even when an earlier one fails; the summary names what failed.
test: all
	@failed=""; \
	rm -f $(TARGET)/e2e/lab-freezes.txt; \
	for t in test-unit test-harness test-install test-abi test-e2e; do \
		echo "=== make $$t"; \
		$(MAKE) --no-print-directory $$t || failed="$$failed $$t"; \
	done; \
	[ ! -f $(TARGET)/e2e/lab-freezes.txt ] || echo "make test: $$(cat $(TARGET)/e2e/lab-freezes.txt)"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: all passed"

test-unit:
	$(CARGO) test --workspace

# The lab harness itself (tests/lab/krunlab's freeze watchdog), with fake consoles: no QEMU,
# no guest, about 40 s; one case drives tests/e2e/run with a fake krunlab.
test-harness: lib
	tests/lab/harness-test

# Install into a DESTDIR and check the layout a distribution package would get.
test-install: all
	@d=$(TARGET)/destdir; rm -rf $$d; \
	$(MAKE) --no-print-directory install DESTDIR=$$d PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu >/dev/null; \
	l=$$d/usr/lib/x86_64-linux-gnu; \
	[ -f $$l/libkrun.so.$(VERSION) ] && [ ! -L $$l/libkrun.so.$(VERSION) ] || { echo "no $$l/libkrun.so.$(VERSION)"; exit 1; }; \
	[ "$$(readlink $$l/libkrun.so.$(MAJOR))" = libkrun.so.$(VERSION) ] || { echo "bad link libkrun.so.$(MAJOR)"; exit 1; }; \
	[ "$$(readlink $$l/libkrun.so)" = libkrun.so.$(MAJOR) ] || { echo "bad link libkrun.so"; exit 1; }; \
	soname=$$(objdump -p $$l/libkrun.so.$(VERSION) | awk '$$1 == "SONAME" {print $$2}'); \
	[ "$$soname" = libkrun.so.$(MAJOR) ] || { echo "SONAME is '$$soname', expected libkrun.so.$(MAJOR)"; exit 1; }; \
	cmp -s $(HEADER) $$d/usr/include/libkrun.h || { echo "header not installed"; exit 1; }; \
	pc="env PKG_CONFIG_PATH=$$l/pkgconfig pkg-config"; \
	[ "$$($$pc --modversion libkrun)" = $(VERSION) ] || { echo "libkrun.pc: wrong version"; exit 1; }; \
	[ "$$($$pc --variable=libdir libkrun)" = /usr/lib/x86_64-linux-gnu ] || { echo "libkrun.pc: wrong libdir"; exit 1; }; \
	[[ "$$($$pc --libs libkrun)" == *-lkrun* ]] || { echo "libkrun.pc: Libs lacks -lkrun"; exit 1; }; \
	echo "test-install: DESTDIR layout, links, SONAME libkrun.so.$(MAJOR), header and libkrun.pc are right"

# The ABI tests build against an installed prefix, found through its libkrun.pc.
test-abi: all
	@if [ ! -f tests/abi/run.sh ]; then \
		echo "test-abi: tests/abi/run.sh does not exist yet; SKIPPING the ABI tests"; exit 0; fi; \
	rm -rf $(STAGE); \
	$(MAKE) --no-print-directory install PREFIX=$(STAGE) DESTDIR= >/dev/null; \
	sh tests/abi/run.sh $(STAGE) $(STAGE)/lib

test-e2e: all
	KRUN_E2E_LIB=$(LIB) tests/e2e/run

# A benchmark, not a test: ours against upstream libkrun, interleaved (tests/bench/run).
# BENCH_ROUNDS=3; sizes: BENCH_FS_MIB, BENCH_FILES, BENCH_NET_MIB (tests/bench/bench.sh).
bench: all
	tests/bench/run $(or $(BENCH_ROUNDS),3)

# pjdfstest (the POSIX file system suite, fetched at its pinned commit, never committed) in
# a guest on the virtio-fs root, with ours and with the bench's reference (tests/posix/run).
# POSIX_DIRS: pjdfstest's test directories (default all).
posix: all
	tests/posix/run $(POSIX_DIRS)

# The property/fuzz harnesses of crates/devices (src/*/fuzz.rs) for longer than `cargo test`
# runs them (64 cases each): minutes, not seconds. Release-optimized test build, so more
# cases fit in the time.
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p devices --lib fuzz

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Prepares a busybox root (target/demo/rootfs) and runs chroot_vm with a hello-world command,
# on this host when its KVM boots guests, else in the lab (examples-c/demo.sh).
demo: all
	examples-c/demo.sh $(LIB) $(EXAMPLE)

clean:
	$(CARGO) clean
	rm -f $(PC) $(PC).tmp

FORCE:
