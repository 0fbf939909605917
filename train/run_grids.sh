#!/usr/bin/env bash
# All experiment grids as one queue (train/zoo_grid.py --grid all), restartable: run it again after any
# interruption and it continues where it stopped.
#   nohup bash train/run_grids.sh > runs/grids.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
mkdir -p runs
# wait for a grid or a training run already running (e.g. started by hand) instead of racing it on the same run folders
while pgrep -f "train/(zoo_grid|train_at)[.]py" > /dev/null; do sleep 60; done
exec nice -n 10 .venv/bin/python train/zoo_grid.py --grid all >> runs/grid-all.log 2>&1
