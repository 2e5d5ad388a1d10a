#!/bin/bash
# Submit the claims sweep as a Slurm job array of SHARDS shards, and a merge job that runs
# when all of them have ended (afterany: a failed shard is reported missing, not waited for).
#   scripts/slurm/submit.sh SHARDS [sbatch options for the shards...]
# prints "<array job id> <merge job id>"; the merged report is reports/<array job id>.html.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:?usage: submit.sh SHARDS [sbatch options...]}
shift
mkdir -p reports
job=$(sbatch --parsable --array="0-$((shards - 1))" "$@" "$here/shards.sbatch")
job=${job%%;*}  # "<id>;<cluster>" on a multi-cluster setup
merge=$(sbatch --parsable --dependency="afterany:$job" --job-name=ntkcheck-merge \
    --output="reports/slurm-$job-merge.out" \
    --wrap="ntkcheck report reports/$job -o reports/$job.html --save reports/$job-merged")
echo "$job ${merge%%;*}"
