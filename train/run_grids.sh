#!/usr/bin/env bash
# All experiment grids as one queue (train/zoo_grid.py --grid all), restartable: run it again after any
# interruption and it continues where it stopped.
#   nohup bash train/run_grids.sh > runs/grids.log 2>&1 &
# GRID=lenet runs the LeNetSmall activation grid instead (zoo_grid.py --grid lenet).
# It starts GRID_WORKERS workers (default: 2, or 1 on a 1-core machine) on the one queue, each with
# nproc/GRID_WORKERS threads; a run is claimed by one worker (runs/*/.locks/). On 2 cores two 1-thread workers
# trained 1.14x more images per second than one 2-thread process (benchmarks/bench_threads.py).
# Worker i logs to runs/grid-w<i>.log.
set -u
cd "$(dirname "$0")/.."
mkdir -p runs
# wait for a grid or a training run already running (e.g. started by hand) instead of racing it on the same run folders
while pgrep -f "train/(zoo_grid|train_at)[.]py" > /dev/null; do sleep 60; done
cores=$(nproc)
workers=${GRID_WORKERS:-2}
[ "$workers" -le "$cores" ] || workers=$cores
threads=$(( cores / workers ))
for i in $(seq 1 "$workers"); do
    OMP_NUM_THREADS=$threads nice -n 10 .venv/bin/python train/zoo_grid.py --grid "${GRID:-all}" >> "runs/grid-w$i.log" 2>&1 &
    sleep 20  # the first worker claims its run before the next one looks
done
wait
