#!/bin/sh
# The wrapper every job runs under:
#   wrapper.sh JOBDIR WORKDIR RUNNERDIR BOOTID ATTEMPT [session]
# Either run as a script, detached in its own session (by the local runner; in the foreground of a Slurm job), or,
# with `session`, evaluated by a detached subshell of the agent (a process that is nobody's child there, with no
# exec of its own), in which case the job's commands get their own session and process group through `setsid`.
# It records its pid (with the boot id, so a pid from before a reboot is never taken for a live process, and with
# `session` the job's process group on a second line, the group that `dstack_stop` signals: the first line stays
# `PID BOOTID`, as older dstacks read it), sources the job's
# env.sh, runs the commands (`commands.sh` under `sh -e`, or `run.sh` where the job has one: the container that
# runs them) with the output appended to `log`, and writes the exit code at the end. It ignores TERM so that a
# stopped job still records how its commands ended.
# The exit code is written in place, `CODE` and a newline in one write(2) (no temporary file and `mv`: a process
# less per job); a reader takes `exit` as written only once it holds a whole line (AgentParser, LocalRunner).
w_self=$$
# In a subshell `$$` is the agent's pid: the process's own comes from /proc (the agent uses `session` only where
# /proc is there).
[ "$6" = session ] && read -r w_self _ < /proc/self/stat
echo "$w_self $4" > "$1/pid"
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
w_setsid=""
[ "$6" = session ] && w_setsid=setsid
if [ -f "$1/run.sh" ]; then
  $w_setsid /bin/sh "$1/run.sh" "$1" "$2" >> "$1/log" 2>&1 < /dev/null &
else
  $w_setsid /bin/sh -e "$1/commands.sh" >> "$1/log" 2>&1 < /dev/null &
fi
child=$!
# A child of a shell without job control is no process group leader, so setsid execs the job's shell itself:
# its pid is the job's session and process group.
[ -n "$w_setsid" ] && printf '%s %s\n%s\n' "$w_self" "$4" "$child" > "$1/pid"
wait $child
code=$?
while kill -0 $child 2>/dev/null; do wait $child; code=$?; done
# Only into this attempt's folder: a folder made anew for another attempt is not this job's any more.
now=""
{ read -r now < "$1/attempt"; } 2>/dev/null
[ -z "$5" ] || [ "$now" = "$5" ] || exit 0
echo $code > "$1/exit"
