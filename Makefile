# ipcshim — `make demo` runs the main job, `make check` runs every test.

PREFIX   ?= /usr/local
CC       ?= gcc
CFLAGS   ?= -O1 -g -Wall -Wextra -D_GNU_SOURCE
CARGO    ?= cargo

LIB      := target/release/libipcshim.so
BIN      := target/release/ipcshim
BUILD    := build/c-tests
TESTS    := $(patsubst c-tests/tests/%.c,$(BUILD)/%,$(wildcard c-tests/tests/*.c))
TOOLS    := $(BUILD)/nosysv $(BUILD)/demo $(BUILD)/bench $(BUILD)/link_test
RUST_SRC := $(shell find src -name '*.rs') Cargo.toml build.rs cbindgen.toml

# The library finds its broker next to itself; tests say so explicitly anyway.
export IPCSHIM_BROKER := $(CURDIR)/$(BIN)
export IPCSHIM_LIB    := $(CURDIR)/$(LIB)

.PHONY: all check demo bench bench-scale install clean header rust-tests c-tests check-clients

all: $(LIB) $(BIN)

# The library is a rustc invocation of its own. Built in one with the rlib that the broker
# and the tests link, its statics may be reached from another crate, so rustc reads each
# through the GOT: a load more on every fast path (semop pairs 3-5% slower).
$(LIB) $(BIN) &: $(RUST_SRC)
	$(CARGO) build --release
	$(CARGO) rustc --release --lib --crate-type cdylib
	@touch $(LIB) $(BIN)

$(BUILD):
	mkdir -p $@

$(BUILD)/%: c-tests/tests/%.c c-tests/common.h $(wildcard c-tests/*_common.h) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< -lpthread

$(BUILD)/nosysv: c-tests/nosysv.c | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $<

$(BUILD)/demo: c-tests/demo.c | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $<

$(BUILD)/bench: c-tests/bench.c | $(BUILD)
	$(CC) -O2 -Wall -Wextra -D_GNU_SOURCE -o $@ $< -lpthread

# A program linked against the library (no preload) as a user would: `make install` into
# build/install, then the generated header and the library found through pkg-config.
INSTALLED := $(CURDIR)/build/install
$(BUILD)/link_test: c-tests/link_test.c include/ipcshim.h ipcshim.pc.in docs/ipcshim.1 $(LIB) $(BIN) | $(BUILD)
	$(MAKE) --no-print-directory install PREFIX=$(INSTALLED) DESTDIR= >/dev/null
	$(CC) $(CFLAGS) -o $@ $< $$(PKG_CONFIG_PATH=$(INSTALLED)/lib/pkgconfig pkg-config --cflags --libs ipcshim)

# Refresh the checked-in header from the Rust source (a test fails while it is stale).
header:
	IPCSHIM_UPDATE_HEADER=1 $(CARGO) test --release --lib header_is_current

rust-tests: all
	$(CARGO) test --release

# Every mode runs even if an earlier one failed; the last line counts the suites.
c-tests: all $(TESTS) $(TOOLS)
	@pass=0; fail=0; \
	for mode in kernel ipcshim sandbox sandbox-kernel; do \
		if bash c-tests/run-suite.sh $$mode; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	done; \
	ns=link-$$$$; \
	if IPCSHIM_NAMESPACE=$$ns $(BUILD)/link_test; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	IPCSHIM_NAMESPACE=$$ns $(BIN) stop --force >/dev/null 2>&1; \
	if bash c-tests/tools.sh; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	echo "c-test suites: $$pass passed, $$fail failed"; \
	test $$fail -eq 0

# A real client: the Python package sysv_ipc's own test suite, against the kernel and then
# under ipcshim in the sandbox. Its first run downloads the pinned sdist from PyPI.
check-clients: all $(BUILD)/nosysv
	bash clients/sysv_ipc.sh

check: rust-tests c-tests check-clients

# The main job: an unmodified C program using all three families between a parent and an
# exec'd process, under ipcshim, inside the sandbox where the kernel's SysV IPC is blocked.
demo: all $(BUILD)/demo $(BUILD)/nosysv
	@ns=demo-$$$$; \
	echo "== running build/c-tests/demo with libipcshim.so preloaded, kernel SysV IPC blocked by seccomp"; \
	IPCSHIM_NAMESPACE=$$ns LD_PRELOAD=$(CURDIR)/$(LIB) $(BUILD)/nosysv $(BUILD)/demo; r=$$?; \
	IPCSHIM_NAMESPACE=$$ns $(BIN) stop --force >/dev/null 2>&1; exit $$r

bench: all $(BUILD)/bench
	bash c-tests/bench.sh 5
	bash c-tests/bench-scale.sh

# Lookup/IPC_STAT latency as a namespace fills up, broker memory per object, 1,000 clients.
bench-scale: all $(BUILD)/bench
	bash c-tests/bench-scale.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libipcshim.so
	install -m 0644 include/ipcshim.h $(DESTDIR)$(PREFIX)/include/ipcshim.h
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ipcshim
	install -m 0644 docs/ipcshim.1 $(DESTDIR)$(PREFIX)/share/man/man1/ipcshim.1
	sed -e 's|@PREFIX@|$(PREFIX)|g' ipcshim.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ipcshim.pc

clean:
	$(CARGO) clean
	rm -rf build
