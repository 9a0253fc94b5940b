#!/bin/sh
# shellcheck disable=SC2317,SC2154  # the functions are called through eval; agent.sh sets dstack_agent_pid
# The agent's functions for a runner of kind slurm (a cluster's login node): sent before agent.sh's text, so the
# agent of such a runner answers these requests as well as its own (docs/slurm.md). Jobs are submitted with
# sbatch instead of started here; their folders are on the shared filesystem, where the job's node runs the same
# wrapper.sh and the login node reads the log and the exit code.

# dstack_slurm_submit BASE JOB ATTEMPT SNAPSHOT WORKDIR CLEANUP LINES [SBATCH-OPTION]...: submits attempt
# ATTEMPT of a job, or finds it submitted. Copies the snapshot's tree (status 5 when the login node has none) and
# staged dependency artifacts into the job's folder, evaluates the payload of LINES lines there (it writes the
# job's files, batch.sh included, as quoted data), submits batch.sh with the options (each one word, never
# evaluated) and answers E slurm ID, E launched. A submit sent again for the same attempt submits nothing twice: it reports
# the id recorded. Status 7 when sbatch refused the job (E error says why).
dstack_slurm_submit() {
  b_base=$1 b_job=$2 b_attempt=$3 b_snap=$4 b_wd=$5 b_clean=$6 b_lines=$7
  shift 7
  dstack_read_payload "$b_lines"
  cd "$b_base" 2>/dev/null || { echo "E error cannot enter the work directory $b_base"; return 2; }
  b_base=$PWD
  dstack_cleanup "$b_clean"
  [ -d jobs ] || mkdir -p jobs || return 2
  dstack_lock_job "$b_base" "$b_job" submit || return 2
  dstack_slurm_submit_locked "$@"
  b_rc=$?
  dstack_unlock_job
  return "$b_rc"
}

dstack_slurm_submit_locked() {
  d="$b_base/jobs/$b_job"
  b_was=""
  { read -r b_was < "$d/attempt"; } 2>/dev/null
  if [ "$b_was" = "$b_attempt" ] && [ -f "$d/slurm_id" ]; then
    b_id=""
    { read -r b_id < "$d/slurm_id"; } 2>/dev/null
    echo "E granted 0 "
    echo "E slurm $b_id"
    echo "E launched"
    return 0
  fi
  if [ -e "$d" ]; then
    # Another attempt's folder (or one whose submission never finished): cancel what may still be queued or
    # running from it (it must not write its exit code into this attempt's folder), then start afresh.
    dstack_slurm_cancel "$d"
    rm -rf "$d"
  fi
  [ -d "$b_base/trees/$b_snap/" ] || { rm -rf "$d.deps"; return 5; }
  echo "E granted 0 "
  # The job's folder with its copy of the code, as dstack_start makes it (a tree published as .b-X/repo is copied
  # whole; an older one is a folder of code).
  if [ -d "$b_base/trees/$b_snap/../repo" ]; then
    cp -Rp "$b_base/trees/$b_snap/.." "$d"
  else
    mkdir -p "$d" && cp -Rp "$b_base/trees/$b_snap/." "$d/repo"
  fi && printf '%s\n' "$b_attempt" > "$d/attempt" || { echo "E error cannot copy the code into $d"; return 2; }
  if [ -d "$d.deps" ]; then
    cp -Rp "$d.deps/." "$d/repo/" && rm -rf "$d.deps" || { echo "E error cannot place the dependency artifacts in $d"; return 2; }
  fi
  (cd "$d" && dstack_payload) || { echo "E error cannot write the job's files in $d"; return 2; }
  : > "$d/log" || { echo "E error cannot create $d/log"; return 2; }
  # The wrapper: one file per work folder and wrapper text, as for jobs started here (agent.sh's dstack_wrapper).
  b_wrapper="$b_base/$dstack_wrapper_name"
  if [ ! -f "$b_wrapper" ]; then
    printf '%s' "$dstack_wrapper" > "$b_wrapper.$$" && mv -f "$b_wrapper.$$" "$b_wrapper" || { echo "E error cannot write $b_wrapper"; return 2; }
  fi
  # The options are "$@": each one word as the coordinator sent it, never split nor evaluated. The environment
  # of this agent (the login shell's PATH, SLURM_CONF...) goes with the job, as sbatch does by default.
  if sbatch --parsable --no-requeue --chdir="$d" --output="$d/slurm.out" --open-mode=append "$@" \
      "$d/batch.sh" "$b_wrapper" "$d" "$b_wd" "$b_base" "$b_attempt" > "$d/sbatch.out" 2> "$d/sbatch.err" < /dev/null; then
    b_id=""
    while IFS= read -r b_line; do [ -n "$b_line" ] && b_id=${b_line%%;*}; done < "$d/sbatch.out"
    case $b_id in
      ''|*[!0-9_]*) echo "E error sbatch gave no job id: $(tr '\n' ' ' < "$d/sbatch.out")"; return 7 ;;
    esac
    printf '%s\n' "$b_id" > "$d/slurm_id.tmp" && mv "$d/slurm_id.tmp" "$d/slurm_id"
    dstack_slurm_states_at=""
    echo "E slurm $b_id"
    echo "E launched"
    return 0
  fi
  echo "E error sbatch refused the job: $(tr '\n' ' ' < "$d/sbatch.err")"
  return 7
}

# dstack_slurm_cancel JOBDIR: cancels the job's Slurm job unless it wrote its exit code.
dstack_slurm_cancel() {
  { read -r c_id < "$1/exit"; } 2>/dev/null && return 0
  c_id=""
  { read -r c_id < "$1/slurm_id"; } 2>/dev/null
  [ -n "$c_id" ] && scancel "$c_id" 2>/dev/null
  return 0
}

# dstack_slurm_stop JOBDIR: scancel (Slurm signals every process of the job; the wrapper still writes how its
# commands ended).
dstack_slurm_stop() {
  dstack_slurm_cancel "$1"
  return 0
}

# The Slurm states of this user's jobs (id state reason lines, from squeue), read at most once a second: one
# squeue for all the jobs being followed, not one per job and poll.
dstack_slurm_states=""
dstack_slurm_states_at=""
dstack_slurm_user=""
dstack_slurm_refresh() { # [force]
  q_now=$(date +%s)
  [ -z "$1" ] && [ "$q_now" = "$dstack_slurm_states_at" ] && return 0
  [ -n "$dstack_slurm_user" ] || dstack_slurm_user=$(id -un)
  if q_out=$(squeue -h --states=all -u "$dstack_slurm_user" -o '%i %T %r' 2>/dev/null); then
    dstack_slurm_states="
$q_out
"
    dstack_slurm_states_at=$q_now
  else
    # The controller did not answer: nothing is known (no job is taken for ended).
    dstack_slurm_states=""
    dstack_slurm_states_at=""
    return 1
  fi
}

# dstack_slurm_state ID: sets q_state and q_reason from the last squeue (q_state empty when it does not list the
# job, "?" when squeue did not answer).
dstack_slurm_state() {
  q_state="" q_reason=""
  if [ -z "$dstack_slurm_states" ]; then q_state="?"; return 0; fi
  case $dstack_slurm_states in
    *"
$1 "*)
      q_line=${dstack_slurm_states#*"
$1 "}
      q_line=${q_line%%"
"*}
      q_state=${q_line%% *}
      q_reason=${q_line#* }
      ;;
  esac
  return 0
}

# dstack_slurm_poll BASE [JOB OFFSET ID]...: for each job, its log from byte OFFSET on (D N LENGTH, at most 4 MiB
# a poll), its Slurm state (K state N STATE REASON; STATE ? when squeue did not answer, UNKNOWN when Slurm no
# longer knows the job) and its own state: S N exit CODE once it wrote its exit code and the whole log was sent,
# S N gone when Slurm ended it without one, S N missing when it has no folder, else S N running.
dstack_slurm_poll() {
  cd "$1" 2>/dev/null || return 2
  shift
  p_fresh=""
  dstack_slurm_refresh || true
  p_n=0
  while [ $# -ge 3 ]; do
    p_d="jobs/$1" p_off=$2 p_id=$3
    shift 3
    if [ ! -d "$p_d" ]; then echo "S $p_n missing"; p_n=$((p_n + 1)); continue; fi
    # Done once `exit` holds a whole line (the wrapper writes it in place: an empty or partial file is not yet).
    p_done="" p_code=""
    { read -r p_code < "$p_d/exit"; } 2>/dev/null && p_done=1
    if [ "$p_off" -eq 0 ] && [ ! -s "$p_d/log" ]; then
      p_size=0
    else
      p_size=$(wc -c < "$p_d/log" 2>/dev/null) || p_size=0
      p_size=$((p_size + 0))
    fi
    p_more=""
    if [ "$p_size" -gt "$p_off" ]; then
      p_len=$((p_size - p_off))
      [ "$p_len" -gt 4194304 ] && p_len=4194304 p_more=1
      echo "D $p_n $p_len"
      tail -c +$((p_off + 1)) "$p_d/log" | dd bs="$p_len" count=1 iflag=fullblock conv=sync 2>/dev/null
    fi
    # An ended job's state is read afresh: it says whether Slurm (a time limit, scancel, a node failure) ended it.
    # So is a job the last squeue did not list (submitted since, by this agent or another coordinator's).
    if [ -n "$p_done" ] && [ -z "$p_fresh" ]; then dstack_slurm_refresh force && p_fresh=1; fi
    dstack_slurm_state "$p_id"
    if [ -z "$q_state" ] && [ -z "$p_fresh" ]; then
      dstack_slurm_refresh force && p_fresh=1
      dstack_slurm_state "$p_id"
    fi
    if [ -z "$q_state" ]; then
      # Not listed: ended so long ago that Slurm forgot it (MinJobAge), or gone with its controller's state.
      q_state=UNKNOWN q_reason=None
    fi
    echo "K state $p_n $q_state $q_reason"
    if [ -n "$p_more" ]; then
      echo "S $p_n running"
    elif [ -n "$p_done" ]; then
      echo "S $p_n exit $p_code"
    else
      case $q_state in
        PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|RESIZING|SIGNALING|STAGE_OUT|STOPPED|RESV_DEL_HOLD|'?')
          echo "S $p_n running" ;;
        *)
          # Slurm ended it: the wrapper may have written its exit code just now.
          if { read -r p_code < "$p_d/exit"; } 2>/dev/null; then echo "S $p_n running"; else echo "S $p_n gone"; fi ;;
      esac
    fi
    p_n=$((p_n + 1))
  done
  return 0
}

# dstack_slurm_probe WORKDIR PARTITION: the cluster as K lines: node NAME STATE CPUS MEMORY_MB GRES PARTITIONS
# (of PARTITION, or of every partition when it is empty), partition NAME AVAIL NODES TIMELIMIT DEFAULT, queued ID
# STATE REASON NAME (this user's jobs), disk_free_kb of WORKDIR.
dstack_slurm_probe() {
  mkdir -p "$1" 2>/dev/null
  command -v sbatch >/dev/null 2>&1 || { echo "E error sbatch is not on the login shell's PATH: is this a Slurm login node?"; return 2; }
  echo "K os $(uname -s) $(uname -m)"
  if [ -n "$2" ]; then
    o_nodes=$(sinfo -h -N -p "$2" -o '%N %T %c %m %G %P' 2>&1) || { echo "E error sinfo: $o_nodes" | tr '\n' ' '; echo; return 2; }
  else
    o_nodes=$(sinfo -h -N -o '%N %T %c %m %G %P' 2>&1) || { echo "E error sinfo: $o_nodes" | tr '\n' ' '; echo; return 2; }
  fi
  [ -n "$o_nodes" ] && printf '%s\n' "$o_nodes" | sed 's/^/K node /'
  sinfo -h -o '%R %a %D %l' 2>/dev/null | sed 's/^/K partition /'
  squeue -h -u "$(id -un)" -o '%i %T %r %j' 2>/dev/null | sed 's/^/K queued /'
  df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print "K disk_free_kb", $4 }'
  return 0
}
