#!/bin/sh
# The wrapper every job runs under, started detached in its own session by the agent (or the local runner):
#   wrapper.sh JOBDIR WORKDIR RUNNERDIR BOOTID ATTEMPT
# It records its pid (with the boot id, so a pid from before a reboot is never taken for a live process), sources
# the job's env.sh, runs the commands (`commands.sh` under `sh -e`, or `run.sh` where the job has one: the container
# that runs them) with the output appended to `log`, and writes the exit code at the end. It ignores TERM so that
# a stopped job still records how its commands ended.
# The exit code is written in place, `CODE` and a newline in one write(2) (no temporary file and `mv`: a process
# less per job); a reader takes `exit` as written only once it holds a whole line (AgentParser, LocalRunner).
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
  echo 1 > "$1/exit"
  exit 0
}
if [ -f "$1/run.sh" ]; then
  /bin/sh "$1/run.sh" "$1" "$2" >> "$1/log" 2>&1 < /dev/null &
else
  /bin/sh -e "$1/commands.sh" >> "$1/log" 2>&1 < /dev/null &
fi
child=$!
wait $child
code=$?
while kill -0 $child 2>/dev/null; do wait $child; code=$?; done
# Only into this attempt's folder: a folder made anew for another attempt is not this job's any more.
now=""
{ read -r now < "$1/attempt"; } 2>/dev/null
[ -z "$5" ] || [ "$now" = "$5" ] || exit 0
echo $code > "$1/exit"
