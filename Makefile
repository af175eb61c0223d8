# gpve: `make run` starts an embedded single-node cluster, `make test` runs the whole suite.
NODE ?= $(shell hostname -s)
DATA ?= $(CURDIR)/data/$(NODE)
PORT ?= 8006
RAFT_PORT ?= 5404
PYTEST_ARGS ?=

.PHONY: run setup test lint sim-sweep sim-sweep-5 bench

setup:
	@scripts/setup.sh

run: setup
	@echo "gpve: starting node '$(NODE)' on https://127.0.0.1:$(PORT)/api2/json"
	@echo "gpve: root@pam password is in $(DATA)/root-password (created on first start)"
	.venv/bin/gpve serve --name $(NODE) --data-dir $(DATA) --listen 127.0.0.1 --api-port $(PORT) --raft-port $(RAFT_PORT)

test:
	@scripts/setup.sh test
	@.venv/bin/python scripts/build_test_guest.py >/dev/null
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 $(PYTEST_ARGS)  # the 15-minute budget: the slowest listed

lint:
	.venv/bin/ruff check .

sim-sweep:
	.venv/bin/python -m sim sweep --seeds 1..200 --jobs 2

# Every fault that keeps TCP's contract (not the datagram-mode reorder/dup, see sim/README.md), 5 nodes, 600 s:
# 50 seeds, each self-checking its first 5 s, then one whole run checked twice in one process.
SIM_TCP_FAULTS = loss,partition,oneway,clog,slow,kill,powerloss,stop,cluster-restart,clockjump,guestcrash,handoverkill
sim-sweep-5:
	.venv/bin/python -m sim sweep --seeds 1..50 --nodes 5 --duration 600 --faults $(SIM_TCP_FAULTS) --jobs 2
	.venv/bin/python -m sim --seed 1 --nodes 5 --duration 600 --faults $(SIM_TCP_FAULTS) --self-check full

bench:
	@scripts/setup.sh bench
	@.venv/bin/python scripts/build_test_guest.py >/dev/null
	.venv/bin/python -m bench all
