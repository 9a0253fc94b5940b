#!/bin/sh
# The wrapper every job runs under, started detached in its own session by the agent (or the local runner):
#   wrapper.sh JOBDIR WORKDIR RUNNERDIR BOOTID ATTEMPT
# It records its pid (with the boot id, so a pid from before a reboot is never taken for a live process), sources
# the job's env.sh, runs run.sh (the commands, or the container that runs them) with the output appended to `log`,
# and writes the exit code atomically at the end. It ignores TERM so that a stopped job still records how its
# commands ended.
echo "$$ $4" > "$1/pid"
trap 'true' TERM INT HUP
DSTACK_RUNNER_DIR=$3
export DSTACK_RUNNER_DIR
[ -f "$1/env.sh" ] && . "$1/env.sh"
# Secrets: into the environment, and their file (0600) gone before any command of the job runs.
[ -f "$1/secrets.env" ] && { . "$1/secrets.env"; rm -f "$1/secrets.env"; }
cd "$1/repo/$2" 2>/dev/null || {
  echo "dstack: working_dir '$2' does not exist in the repository" >> "$1/log"
  now=""
  { read -r now < "$1/attempt"; } 2>/dev/null
  [ -z "$5" ] || [ "$now" = "$5" ] || exit 0
  echo 1 > "$1/exit.tmp" && mv "$1/exit.tmp" "$1/exit"
  exit 0
}
/bin/sh "$1/run.sh" "$1" "$2" >> "$1/log" 2>&1 < /dev/null &
child=$!
wait $child
code=$?
while kill -0 $child 2>/dev/null; do wait $child; code=$?; done
# Only into this attempt's folder: a folder made anew for another attempt is not this job's any more.
now=""
{ read -r now < "$1/attempt"; } 2>/dev/null
[ -z "$5" ] || [ "$now" = "$5" ] || exit 0
echo $code > "$1/exit.tmp" && mv "$1/exit.tmp" "$1/exit"
