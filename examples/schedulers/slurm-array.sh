#!/bin/bash
# One batch over many machines with a Slurm job array: each array task runs a fixed 1/N of the
# sorted prompts (--shard auto reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT) and writes its
# own results file (batch_results.shard-K-of-N.jsonl) into the shared output folder.
# Submit:  sbatch examples/schedulers/slurm-array.sh
# Watch:   run-batch --report --output-dir /shared/batch_output      (merges every shard)
# Resubmitting the same array resumes: each shard skips its tasks that already succeeded.
#SBATCH --job-name=openhands-batch
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=12:00:00
#SBATCH --output=logs/batch-%A_%a.out
set -euo pipefail
cd "$HOME/OpenHands"
# Slurm sends SIGTERM before it kills a job at its time limit: run_batch then stops its running
# tasks the graceful way, records them as interrupted and exits 143; resubmitting picks them up.
exec poetry run python run_batch.py \
  --prompt-dir /shared/GitTaskBench/prompts \
  --output-dir /shared/batch_output \
  --shard auto --max-workers 2 --timeout 1800 --retries 2 --runtime docker
