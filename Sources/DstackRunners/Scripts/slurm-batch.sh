#!/bin/sh
# The batch script of a job on a Slurm runner, which sbatch runs on the job's node in the job's folder (on the
# shared filesystem): the same wrapper as on SSH runners, in the foreground, so that the Slurm job ends when the
# job's commands do and Slurm's signals (scancel, the time limit) reach them.
#   batch.sh WRAPPER JOBDIR WORKDIR RUNNERDIR ATTEMPT
boot=""
{ read -r boot < /proc/sys/kernel/random/boot_id; } 2>/dev/null
exec /bin/sh "$1" "$2" "$3" "$4" "$boot" "$5"
