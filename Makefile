# Two commands do everything on a fresh Debian machine:
#   make demo   reflash the simulated hat with a generated image and show its status
#   make test   ansible-test sanity and units, pytest, molecule
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := .build
# The repository root is the collection root; Ansible finds it through this path.
COLLECTIONS := $(abspath $(BUILD)/collections)
COLL_LINK := $(COLLECTIONS)/ansible_collections/minicluster/cm4
# ansible-test resolves its working directory, so it runs in a copy.
TEST_COPY := $(BUILD)/test/ansible_collections/minicluster/cm4
APT_PACKAGES := mtools dosfstools fdisk e2fsprogs xz-utils zstd bmap-tools rsync debootstrap systemd-container iproute2 openssh-client libnfs-utils
# Telemetry tests: a real Prometheus and promtool, InfluxDB 1.x, and a headless browser.
APT_PACKAGES += prometheus influxdb chromium
# The network flash: its payload is built from Debian arm64 packages, its agent tested in QEMU.
APT_PACKAGES += qemu-system-arm device-tree-compiler
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := true
export ANSIBLE_NOCOLOR := $(if $(CI),1,)
export PYTHONPATH := $(abspath tests):$(COLLECTIONS)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: test-copy all demo demo-fleet test sanity units pytest pytest-system pytest-netflash molecule bench lint build clean apt venv collection payload netflash-qemu telemetry-bench

all: test

$(BUILD)/.apt:
	@mkdir -p $(BUILD)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

apt: $(BUILD)/.apt

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

venv: $(BIN)/.installed

collection: $(COLL_LINK)

$(COLL_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn $(abspath .) $@

# ansible-test bootstraps pip in each sanity environment from a download this network does not
# reach; it takes a pre-seeded file instead.
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
$(GET_PIP): tools/get_pip_standin.py
	@mkdir -p $(dir $@)
	@[ -f $@ ] || cp tools/get_pip_standin.py $@

test-copy: venv apt
	@mkdir -p $(TEST_COPY)
	@rsync -a --delete --exclude /.git --exclude $(VENV) --exclude $(BUILD) --exclude tests/output \
	  --exclude '__pycache__' --exclude .pytest_cache --exclude .hypothesis ./ $(TEST_COPY)/
	@# The copy lies inside this checkout, whose git would hide it (.build is ignored): give it its own.
	@[ -d $(TEST_COPY)/.git ] || git -C $(TEST_COPY) init -q

sanity: venv $(GET_PIP) test-copy
	cd $(TEST_COPY) && $(abspath $(BIN))/ansible-test sanity --local --python 3.11 --color no

units: venv $(GET_PIP) test-copy
	cd $(TEST_COPY) && $(abspath $(BIN))/ansible-test units --local --python 3.11 --color no

pytest: pytest-system pytest-netflash

# One file's tests share their fixtures (a test fleet, a simulator): files are spread over workers whole.
PYTEST_WORKERS ?= 2
pytest-system: venv apt collection
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25 tests/system

pytest-netflash: venv apt collection
	$(BIN)/pytest -q -m 'not qemu_many' tests/netflash

# The network flash's payload (.build/payload/cm4-<key>/), rebuilt only when an input changes.
payload: venv apt
	$(BIN)/python tools/payload/build.py --profile cm4

# Every QEMU run of the network flash agent (zstd, faults, two guests): slow under emulation.
netflash-qemu: venv apt collection
	$(BIN)/pytest -q tests/netflash

molecule: venv apt collection
	cd extensions && $(abspath $(BIN))/molecule test --all

molecule-%: venv apt collection
	cd extensions && $(abspath $(BIN))/molecule test -s $*

lint: venv collection
	$(BIN)/ansible-lint --profile production

# Every suite, several at a time (tools/testjobs.py); TEST_JOBS=1 runs them one after the other.
TEST_JOBS ?= 4
test:
	@# The virtual environment and the Debian packages download side by side.
	$(MAKE) --no-print-directory -j2 venv apt
	$(MAKE) --no-print-directory collection $(GET_PIP) test-copy
	$(BIN)/python tools/testjobs.py --jobs $(TEST_JOBS)

demo: venv apt collection
	$(BIN)/python tools/demo.py

# Four test nodes (systemd-nspawn, root only) on the simulated hat, taken to a storage pool by site.yml.
demo-fleet: venv apt collection
	$(BIN)/python tools/demo_fleet.py

bench: venv apt collection
	$(BIN)/python tools/flash_bench.py

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD)

clean:
	rm -rf $(BUILD) tests/output

# Telemetry: a full reading of the hat from the service against the hat_info module, and how long
# the service keeps the console locked.
telemetry-bench: venv apt collection
	$(BIN)/python tools/telemetry_bench.py
