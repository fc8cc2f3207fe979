#!/usr/bin/env bash
# Debian's Slurm and munge for tests/test_slurm.py, which starts its own single-node cluster
# (tests/slurm_cluster.py: its own munged, slurmctld and slurmd, every file in a temporary
# folder). Nothing is configured or started here, and the services the packages bring are left
# as they are: the test uses none of them.
# Idempotent: does nothing when the programs are there. Never fails the caller: when apt-get
# cannot install them (no root, no network, not Debian), it says so and exits 0, and the Slurm
# tests skip with that reason.
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

as_root=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "Slurm: not installed (missing ${missing[*]}) and not root: its tests will skip"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Slurm: not installed (missing ${missing[*]}) and no apt-get here: its tests will skip"
  exit 0
fi

echo "Slurm: installing slurm-wlm and munge with apt-get (missing ${missing[*]})..."
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if "${as_root[@]}" apt-get update -q >"$log" 2>&1 &&
   "${as_root[@]}" apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$log" 2>&1; then
  echo "Slurm: installed ($(slurmctld -V 2>/dev/null || echo 'version unknown'))"
else
  echo "Slurm: apt-get failed, its tests will skip; the end of its output:"
  tail -n 5 "$log"
fi
rm -f "$log"
exit 0
