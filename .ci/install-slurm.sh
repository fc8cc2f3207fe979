#!/usr/bin/env bash
# Debian's Slurm and munge for tests/test_slurm.py, which starts its own single-node cluster
# (tests/slurm_cluster.py: its own munged, slurmctld and slurmd, every file in a temporary
# folder). Nothing is configured or started here, and the services the packages bring are left
# as they are: the test uses none of them.
# Idempotent: does nothing when the programs are there. Never fails the caller (apt-install.sh).
set -uo pipefail

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
missing=()
for program in munged slurmctld slurmd sbatch; do
  command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
if ((${#missing[@]} == 0)); then
  echo "Slurm: already installed ($(slurmctld -V 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

bash "$(dirname "$0")/apt-install.sh" Slurm "the tests of tests/test_slurm.py" slurm-wlm munge
if command -v slurmctld >/dev/null 2>&1; then
  echo "Slurm: $(slurmctld -V 2>/dev/null || echo 'version unknown')"
fi
exit 0
