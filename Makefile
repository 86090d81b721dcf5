# The two commands of README.md: `make run` and `make test`.
# Both install what is missing (as root), build, and build the test image.

SHELL := /bin/bash
VAR ?= $(CURDIR)/var
CARGO ?= cargo
GUEST_TARGET_DIR := $(CURDIR)/target/guest
GUEST_BIN := $(GUEST_TARGET_DIR)/x86_64-unknown-linux-gnu/guest/cm-guest
LEGACY_NAMES := cmscp cmrsync cmdo cmstatus cmstop cmplay

.PHONY: run test deps build guest image cloud-image stop bench lint clean-var

run: deps build image
	@scripts/run-local.sh start

stop:
	@scripts/run-local.sh stop

test: deps build image cloud-image
	scripts/test.sh

deps:
	@scripts/install-deps.sh

# The daemons and cm, plus the old cloudManager names as links to cm.
build:
	$(CARGO) build --workspace --bins
	@for n in $(LEGACY_NAMES); do ln -sf cm target/debug/$$n; done

# cm-guest is static (it runs inside the tiny test image).
guest:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -p cm-guest --profile guest \
		--target x86_64-unknown-linux-gnu --target-dir $(GUEST_TARGET_DIR)

# The tiny test guest, twice: kernel + initramfs (root in RAM), and the same
# guest as a bootable disk that keeps what it writes (docs/testing.md, "The two
# test guests"; as root: loop device, mount). Each is cached, rebuilt only
# when its inputs change.
image: guest
	@scripts/build-test-image.sh $(GUEST_BIN) $(VAR)/images/cm-test
	@scripts/build-test-disk.sh $(VAR)/images/cm-test-disk.qcow2 $(VAR)/images/cm-test

# The Debian 12 image with cloud-init that the cloud-init test boots
# (docs/cloud-images.md); cached, rebuilt only when the script changes.
cloud-image:
	@scripts/build-cloud-image.sh $(VAR)/images/debian-12-cloud.qcow2

# Benchmarks run the release build of the daemons.
bench: deps build image
	$(CARGO) build --release --bins
	CM_BIN_DIR=$(CURDIR)/target/release $(CARGO) run --release -q -p cmbench -- all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-var: stop
	rm -rf $(VAR)
