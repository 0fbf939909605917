#!/usr/bin/env bash
# All experiment grids, one after the other, restartable: run it again after any interruption.
#   nohup bash train/run_grids.sh > runs/grids.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
mkdir -p runs
# wait for a grid already running (e.g. started by hand) instead of racing it on the same run folders
while pgrep -f "train/zoo_grid.py" > /dev/null; do sleep 60; done
nice -n 10 .venv/bin/python train/zoo_grid.py --grid zoo --root runs/fmnist-zoo >> runs/fmnist-zoo.log 2>&1
nice -n 10 .venv/bin/python train/zoo_grid.py --grid transfer --root runs/transfer >> runs/transfer.log 2>&1
