#!/bin/bash
# One batch over many machines with a Slurm job array: each array task runs a fixed 1/N of the
# sorted prompts (--shard auto reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT) and writes its
# own results file (batch_results.shard-K-of-N.jsonl) into the shared output folder.
# Submit:  mkdir -p logs && sbatch examples/schedulers/slurm-array.sh   (Slurm does not create logs/)
#          options after the script go to run-batch, and later ones win:
#          sbatch --array=0-3 examples/schedulers/slurm-array.sh --max-workers 4 --timeout 3600
#          the paths below come from the environment sbatch is called from:
#          OUTPUT_DIR=/shared/run-07 sbatch examples/schedulers/slurm-array.sh
# Watch:   run-batch --report --output-dir /shared/batch_output      (merges every shard)
# Resubmitting the same array resumes: each shard skips its tasks that already succeeded and runs
# the interrupted, failed and never-started ones.
#
# Stopping. At the time limit, and on a plain `scancel`, Slurm sends SIGTERM to every process of
# the job, not only to this script: OpenHands gets it straight from Slurm and dies at once, without
# saving its trajectory, before run_batch can stop it gracefully; KillWait seconds later (30 by
# default) Slurm kills what is left. So --signal=B:TERM@120 below asks Slurm for a SIGTERM to the
# batch shell only (B:), at least 120 s before the time limit (Slurm checks every 30 s or so and
# may send it up to a minute earlier). `exec` makes run_batch that shell: it starts no new task,
# sends its running tasks SIGINT (OpenHands stops the agent, state STOPPED, saves the trajectory),
# kills whatever is left after --grace-period (30 s), records them `interrupted` with their cost,
# and exits 143 (the job then shows FAILED, exit code 143), before Slurm's own SIGTERM. Keep the
# 120 above --grace-period plus a few seconds, and keep the `exec`: without it the shell dies of
# the signal and run_batch is never told (measured: it then runs on, orphaned, outside the job).
# To stop an array task early the same graceful way: scancel --batch --signal=TERM <jobid>_<index>
# (signals the batch shell only). A plain `scancel <jobid>_<index>` also stops it, but the way the
# time limit does without the early signal: the running tasks are killed, recorded `interrupted`
# with the cost their event files show, usually without a trajectory.
#SBATCH --job-name=openhands-batch
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=12:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --output=logs/batch-%A_%a.out
set -euo pipefail
PROJECT_DIR=${PROJECT_DIR:-$HOME/OpenHands}              # the OpenHands checkout
PROMPT_DIR=${PROMPT_DIR:-/shared/GitTaskBench/prompts}   # on storage every node sees
OUTPUT_DIR=${OUTPUT_DIR:-/shared/batch_output}           # shared by every array task
RUN_BATCH=${RUN_BATCH:-poetry run python run_batch.py}   # how run_batch starts (split on spaces;
                                                         # `poetry run` execs, so the pid stays)
cd "$PROJECT_DIR"
read -ra run_batch <<< "$RUN_BATCH"
exec "${run_batch[@]}" \
  --prompt-dir "$PROMPT_DIR" \
  --output-dir "$OUTPUT_DIR" \
  --shard auto --max-workers 2 --timeout 1800 --retries 2 --runtime docker "$@"
