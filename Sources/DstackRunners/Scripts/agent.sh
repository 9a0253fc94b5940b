#!/bin/sh
# shellcheck disable=SC2317  # the functions are called through eval
# The dstack agent: one per SSH connection to a runner, started once through the login shell (so its start-up
# files run once and jobs inherit what they set up), then carrying every request of that connection. Nothing is
# installed on the runner: the coordinator sends this text each time it connects. docs/agent.md describes the
# protocol; the Swift side of it is AgentProtocol.swift.
#
# Requests arrive on standard input, one per line: a call of one of the dstack_* functions below, its arguments
# single-quoted words (never a newline in them). Some requests are followed by a payload whose length the request
# gives; only such requests read standard input. Answers go to standard output, one request at a time:
#   E WORDS       an event (granted SLOT GPUS, launched, ...)
#   K KEY VALUE   a fact (probe)
#   S N STATE     the state of the Nth job of a poll (running, exit CODE, gone)
#   D N LENGTH    LENGTH raw bytes of the Nth job's log follow this line
#   . STATUS      the end of the answer; STATUS is the request's exit status (see AgentStatus)
# Exit statuses: 0 done; 2 the runner cannot do it (folder, disk); 3 no free slot; 4 not enough free GPUs;
# 5 no code tree of the snapshot; 6 bad request.

# dstack_wrapper holds the text of wrapper.sh and dstack_wrapper_name the file it is kept in (wrapper-HASH.sh, in
# each work folder): the coordinator sets both in front of this script (RunnerScript.agentProgram).
# shellcheck disable=SC2154
: "${dstack_wrapper:?}" "${dstack_wrapper_name:?}"

# Everything but the request reader gets /dev/null as standard input: no command may eat the next request.
exec 3<&0 </dev/null
umask 022

# A lock is a file BASE/locks/slot-N or gpu-N holding `JOB OWNER`, made by an exclusive create (noclobber: O_EXCL,
# no process). An older dstack made each lock a folder with an `owner` file inside; such locks are read (from
# LOCK/owner) and reclaimed alike.

# dstack_take LOCK JOB OWNER: takes LOCK for JOB when nobody holds it.
dstack_take() {
  set -C
  if { printf '%s %s\n' "$2" "$3" > "$1"; } 2>/dev/null; then set +C; return 0; fi
  set +C
  return 1
}

# dstack_acquire BASE JOB SLOTS GPUS NEED OWNER: takes a job slot and NEED of the GPUS (space-separated) with the
# locks above under BASE/locks; sets `slot` and `got`. A job that holds its locks already gets them back. Returns 3
# when no slot is free and 4 when not enough GPUs are (nothing is kept then), after reclaiming the locks of jobs
# that are over (dstack_reclaim).
dstack_acquire() {
  a_base=$1 a_job=$2 a_max=$3 a_gpus=$4 a_need=$5 a_owner=$6
  [ -d "$a_base/locks" ] || mkdir -p "$a_base/locks" || return 2
  # The locks naming the job are its own (no record of them is kept: a file less per job).
  dstack_held "$a_base" "$a_job"
  [ -n "$h_slot" ] && { slot=$h_slot got=$h_gpus; return 0; }
  # GPUs without a slot (its slot was reclaimed): let them go and take afresh.
  [ -n "$h_gpus" ] && dstack_release_locks "$a_base" "$a_job"
  # Free locks first; only when too few are free are the locks of jobs that are over looked for (a rename and a
  # removal, two processes, which the usual start does without).
  dstack_take_locks && return 0
  dstack_reclaim "$a_base"
  dstack_take_locks
}

# dstack_held BASE JOB: the locks under BASE/locks that name JOB: h_slot (its slot number) and h_gpus (its GPUs,
# space-separated).
dstack_held() {
  h_slot="" h_gpus=""
  for h_l in "$1"/locks/slot-* "$1"/locks/gpu-*; do
    [ -e "$h_l" ] || continue
    h_of=$h_l h_holder=""
    [ -d "$h_l" ] && h_of=$h_l/owner
    { read -r h_holder _ < "$h_of"; } 2>/dev/null
    [ "$h_holder" = "$2" ] || continue
    case ${h_l##*/} in slot-*) h_slot=${h_l##*/slot-} ;; gpu-*) h_gpus="$h_gpus ${h_l##*/gpu-}" ;; esac
  done
  return 0
}

# dstack_take_locks: the slot and GPU locks of dstack_acquire's job, as its variables say; all or nothing.
dstack_take_locks() {
  slot="" got="" a_held="" a_i=0
  # A spare slot lock first (see dstack_spares), then the first free one.
  for a_s in $dstack_spares; do
    case $a_s in
      slot-*) a_k=${a_s#slot-}
        if [ "$a_k" -lt "$a_max" ] 2>/dev/null && dstack_take_spare "$a_s" "$a_job" "$a_owner"; then
          slot=$a_k a_held=$a_s
          break
        fi ;;
    esac
  done
  while [ -z "$slot" ] && [ "$a_i" -lt "$a_max" ]; do
    if dstack_take "$a_base/locks/slot-$a_i" "$a_job" "$a_owner"; then
      slot=$a_i a_held="slot-$a_i"
      break
    fi
    a_i=$((a_i + 1))
  done
  [ -n "$slot" ] || return 3
  a_n=0
  for a_g in $a_gpus; do
    [ "$a_n" -ge "$a_need" ] && break
    if dstack_take_spare "gpu-$a_g" "$a_job" "$a_owner" || dstack_take "$a_base/locks/gpu-$a_g" "$a_job" "$a_owner"; then
      got="$got $a_g" a_held="$a_held gpu-$a_g" a_n=$((a_n + 1))
    fi
  done
  if [ "$a_n" -lt "$a_need" ]; then
    set --
    for a_l in $a_held; do set -- "$@" "$a_base/locks/$a_l"; done
    rm -rf "$@"
    slot="" got=""
    return 4
  fi
  return 0
}

# dstack_reclaim BASE: removes the locks whose job is over (it wrote its exit code, or its process is gone, or it
# never got a folder in 10 minutes): each renamed to a tombstone first, so a lock another job took in between is
# never removed.
dstack_reclaim() {
  for a_l in "$1"/locks/slot-* "$1"/locks/gpu-*; do
    [ -e "$a_l" ] || continue
    a_holder="" a_pid="" a_of=$a_l
    [ -d "$a_l" ] && a_of=$a_l/owner
    { read -r a_holder _ < "$a_of"; } 2>/dev/null
    if [ -z "$a_holder" ]; then
      # No owner a minute after it was made: its taker died between making it and writing the owner.
      [ -n "$(find "$a_l" -maxdepth 0 -mmin +1 2>/dev/null)" ] && rm -rf "$a_l"
      continue
    fi
    a_jd="$1/jobs/$a_holder"
    a_over=""
    if [ -f "$a_jd/exit" ]; then
      a_over=1
    elif [ -f "$a_jd/pid" ]; then
      { read -r a_pid a_boot < "$a_jd/pid"; } 2>/dev/null
      if [ -n "$a_boot" ] && [ "$a_boot" != "$dstack_boot" ]; then a_over=1
      elif [ -n "$a_pid" ] && ! kill -0 "$a_pid" 2>/dev/null; then a_over=1; fi
    elif [ ! -d "$a_jd" ] && [ -n "$(find "$a_l" -maxdepth 0 -mmin +10 2>/dev/null)" ]; then
      a_over=1
    fi
    [ -n "$a_over" ] || continue
    # Rename, then check it is still the same holder's: a lock taken again meanwhile is put back.
    a_t="$1/locks/.reclaim-$$-${a_l##*/}"
    mv "$a_l" "$a_t" 2>/dev/null || continue
    a_now=""
    a_of=$a_t
    [ -d "$a_t" ] && a_of=$a_t/owner
    { read -r a_now _ < "$a_of"; } 2>/dev/null
    # Put back a lock taken again meanwhile, unless the name was taken anew (mv would move it inside).
    if [ "$a_now" = "$a_holder" ]; then rm -rf "$a_t"; elif [ ! -e "$a_l" ]; then mv "$a_t" "$a_l" 2>/dev/null || rm -rf "$a_t"; else rm -rf "$a_t"; fi
  done
}

# dstack_release_locks BASE JOB: releases the locks that name the job (and an older dstack's held-JOB record).
dstack_release_locks() {
  r_base=$1 r_job=$2
  set --
  for r_l in "$r_base"/locks/slot-* "$r_base"/locks/gpu-*; do
    [ -e "$r_l" ] || continue
    r_of=$r_l r_holder=""
    [ -d "$r_l" ] && r_of=$r_l/owner
    { read -r r_holder _ < "$r_of"; } 2>/dev/null
    [ "$r_holder" = "$r_job" ] && set -- "$@" "$r_l"
  done
  [ -f "$r_base/locks/held-$r_job" ] && set -- "$@" "$r_base/locks/held-$r_job"
  [ $# -gt 0 ] && rm -rf "$@"
  return 0
}

# Locks of jobs a poll saw over are released with the next removal this agent runs anyway (the next start's
# cleanup, a finish, a probe) or when it ends: one process less per job. Meanwhile they are no one's: the job's exit
# code already makes them reclaimable by any other agent (dstack_reclaim), and this agent takes none before.
dstack_later_base="" dstack_later_jobs=""

# dstack_release_later BASE JOB: releases the job's locks with the next removal.
dstack_release_later() {
  [ -n "$dstack_later_base" ] && [ "$dstack_later_base" != "$1" ] && dstack_flush
  dstack_later_base=$1 dstack_later_jobs="$dstack_later_jobs $2"
}

# A start takes over the lock files of this agent's jobs that are over rather than removing them and making new
# ones: dstack_spares names them (slot-N, gpu-G, in dstack_spare_base), dstack_spare_jobs their holders. The start
# rewrites one with its own job (no create, no removal: in the usual run, a job ends and the next one takes its
# slot, and no rm runs); whatever it does not take is removed after it (dstack_drop_spares).
dstack_spares="" dstack_spare_jobs="" dstack_spare_base="" dstack_keep_spares=""

# dstack_flush [PATH]...: removes the PATHs and the locks released later (those still naming their job), in one rm;
# with dstack_keep_spares set (a start, in its work folder), those locks in that folder become spares instead.
dstack_flush() {
  if [ -n "$dstack_later_jobs" ]; then
    l_keep=""
    [ -n "$dstack_keep_spares" ] && [ "$dstack_later_base" = "$PWD" ] && [ -z "$dstack_spares" ] && l_keep=1
    for l_l in "$dstack_later_base"/locks/slot-* "$dstack_later_base"/locks/gpu-*; do
      [ -e "$l_l" ] || continue
      l_of=$l_l l_holder=""
      [ -d "$l_l" ] && l_of=$l_l/owner
      { read -r l_holder _ < "$l_of"; } 2>/dev/null
      [ -n "$l_holder" ] || continue
      case " $dstack_later_jobs " in
        *" $l_holder "*)
          if [ -n "$l_keep" ] && [ -f "$l_l" ]; then
            dstack_spares="$dstack_spares ${l_l##*/}" dstack_spare_jobs="$dstack_spare_jobs $l_holder"
          else
            set -- "$@" "$l_l"
          fi ;;
      esac
    done
    [ -n "$l_keep" ] && dstack_spare_base=$PWD
    dstack_later_base="" dstack_later_jobs=""
  fi
  [ $# -gt 0 ] && rm -rf "$@"
  return 0
}

# dstack_take_spare NAME JOB OWNER: takes over the spare lock NAME (in dstack_spare_base) for JOB when it is one
# and still names the finished job it was kept for.
dstack_take_spare() {
  case " $dstack_spares " in *" $1 "*) ;; *) return 1 ;; esac
  t_holder=""
  { read -r t_holder _ < "$dstack_spare_base/locks/$1"; } 2>/dev/null
  # An empty or missing file is someone's lock being made (or none): never ours.
  [ -n "$t_holder" ] || return 1
  case " $dstack_spare_jobs " in *" $t_holder "*) ;; *) return 1 ;; esac
  printf '%s %s\n' "$2" "$3" > "$dstack_spare_base/locks/$1" || return 1
  t_rest=""
  for t_s in $dstack_spares; do [ "$t_s" = "$1" ] || t_rest="$t_rest $t_s"; done
  dstack_spares=$t_rest
  return 0
}

# dstack_drop_spares: removes the spare locks no start took (those still naming the finished job they were kept for).
dstack_drop_spares() {
  [ -n "$dstack_spares" ] || return 0
  set --
  for d_s in $dstack_spares; do
    d_holder=""
    { read -r d_holder _ < "$dstack_spare_base/locks/$d_s"; } 2>/dev/null
    [ -n "$d_holder" ] || continue
    case " $dstack_spare_jobs " in *" $d_holder "*) set -- "$@" "$dstack_spare_base/locks/$d_s" ;; esac
  done
  dstack_spares="" dstack_spare_jobs="" dstack_spare_base=""
  [ $# -gt 0 ] && rm -f "$@"
  return 0
}

# dstack_cleanup NAMES: removes the folders (and start locks) of the finished jobs NAMES (space-separated plain
# names; others are skipped), relative to the work folder it runs in, with the locks released later.
dstack_cleanup() {
  c_names=$1
  set --
  for c_old in $c_names; do
    case $c_old in *[!A-Za-z0-9._-]*|.|..) ;; *) set -- "$@" "jobs/$c_old" "jobs/.start-$c_old" ;; esac
  done
  dstack_flush "$@"
}

# dstack_start BASE JOB ATTEMPT SLOTS GPUS NEED OWNER SNAPSHOT WORKDIR EXPORT CLEANUP LINES: starts attempt ATTEMPT
# of a job, or finds it started. Takes the slot (E granted SLOT GPUS, GPUs comma-separated; status 3 or 4 when none
# is free), copies the snapshot's tree (status 5 when the runner has none) and staged dependency artifacts into
# the job's folder, evaluates the payload of LINES lines there (it writes the job's files, as quoted data), launches
# the wrapper detached and answers E launched. A start sent again for the same attempt (after a dropped
# connection) launches nothing twice: it reports what was done. CLEANUP lists finished jobs' folders to remove.
dstack_start() {
  s_base=$1 s_job=$2 s_attempt=$3
  dstack_read_payload "${12}"
  cd "$s_base" 2>/dev/null || { echo "E error cannot enter the work directory $s_base"; return 2; }
  s_base=$PWD
  # Finished jobs' folders go in one rm (before any lock is taken here); the locks released later become spares
  # this start may take over, and what it leaves is removed after it.
  dstack_keep_spares=1
  dstack_cleanup "${11}"
  dstack_keep_spares=""
  [ -d jobs ] || { mkdir -p jobs || { dstack_drop_spares; return 2; }; }
  dstack_lock_job "$s_base" "$s_job" start || { dstack_drop_spares; return 2; }
  dstack_start_locked "$@"
  s_rc=$?
  dstack_unlock_job
  dstack_drop_spares
  return "$s_rc"
}

# dstack_read_payload LINES: reads the payload that follows a request, LINES whole lines, into
# dstack_payload_text, with the shell's own read (no process).
dstack_read_payload() {
  dstack_payload_text="" r_i=0
  while [ "$r_i" -lt "$1" ] && IFS= read -r r_line <&3; do
    dstack_payload_text="$dstack_payload_text$r_line
"
    r_i=$((r_i + 1))
  done
}

# dstack_lock_job BASE JOB WHAT: one starter (or submitter) per job at a time: one whose connection dropped may
# still be running here. The lock file BASE/jobs/.start-JOB is made with noclobber (an O_EXCL create, no process)
# and holds its agent's pid, or "free" once done (dstack_unlock_job). Gives up after a minute (WHAT names the
# request in the error).
dstack_lock_job() {
  dstack_job_lock="$1/jobs/.start-$2" l_i=0
  while :; do
    set -C
    if { echo "$dstack_agent_pid" > "$dstack_job_lock"; } 2>/dev/null; then set +C; return 0; fi
    set +C
    l_other=""
    { read -r l_other < "$dstack_job_lock"; } 2>/dev/null
    if [ "$l_other" = free ] || { [ -n "$l_other" ] && ! kill -0 "$l_other" 2>/dev/null; }; then
      echo "$dstack_agent_pid" > "$dstack_job_lock"
      return 0
    fi
    l_i=$((l_i + 1))
    [ "$l_i" -gt 600 ] && { echo "E error another $3 of $2 holds $dstack_job_lock; if no other dstack is starting it, remove that file"; return 2; }
    sleep 0.1
  done
}

# dstack_unlock_job: lets the next starter of the job locked last in.
dstack_unlock_job() {
  echo free > "$dstack_job_lock"
}

dstack_start_locked() {
  d="$s_base/jobs/$s_job"
  # `attempt` holds the attempt's number, and a second line `launched` once its wrapper was started (the pid file
  # comes only when the wrapper runs, which may be after a start sent again right behind this one).
  s_was="" s_launched=""
  { { read -r s_was; read -r s_launched; } < "$d/attempt"; } 2>/dev/null
  if [ "$s_was" = "$s_attempt" ] && { [ "$s_launched" = launched ] || [ -f "$d/pid" ]; }; then
    # This attempt was launched already (a start asked again after a dropped connection, or by attach): report
    # it, whatever the slots and the tree are now; nothing is taken or launched again.
    dstack_held "$s_base" "$s_job"
    s_cuda=""
    for g in $h_gpus; do s_cuda="${s_cuda:+$s_cuda,}$g"; done
    echo "E granted ${h_slot:-0} $s_cuda"
    echo "E launched"
    return 0
  fi
  if [ "$s_was" != "$s_attempt" ] && [ -e "$d" ]; then
    # Another attempt's folder: the coordinator moved on. Whatever may still run there is stopped first (it must
    # neither keep a GPU whose lock goes now nor write its exit code into this attempt's folder).
    dstack_stop "$d"
    dstack_release_locks "$s_base" "$s_job"
    rm -rf "$d"
  fi
  [ -d "$s_base/trees/$8/" ] || return 5
  dstack_acquire "$s_base" "$s_job" "$4" "$5" "$6" "$7" || { s_rc=$?; rm -rf "$d.deps"; return "$s_rc"; }
  s_cuda=""
  for g in $got; do s_cuda="${s_cuda:+$s_cuda,}$g"; done
  echo "E granted $slot $s_cuda"
  [ -e "$d" ] && rm -rf "$d"
  # The job's folder with its copy of the code: a tree published as .b-X/repo is copied whole from .b-X (one
  # process makes the folder too); one made by an older dstack is a folder of code (its parent is trees/, where
  # nothing is called repo), copied into a new folder.
  if [ -d "$s_base/trees/$8/../repo" ]; then
    cp -Rp "$s_base/trees/$8/.." "$d"
  else
    mkdir -p "$d" && cp -Rp "$s_base/trees/$8/." "$d/repo"
  fi && printf '%s\n' "$s_attempt" > "$d/attempt" ||
    { echo "E error cannot copy the code into $d"; dstack_release_locks "$s_base" "$s_job"; return 2; }
  if [ -d "$d.deps" ]; then
    cp -Rp "$d.deps/." "$d/repo/" && rm -rf "$d.deps" ||
      { echo "E error cannot place the dependency artifacts in $d"; dstack_release_locks "$s_base" "$s_job"; return 2; }
  fi
  # The job's files: its commands and environment as the payload writes them (quoted data; no subshell: a line
  # that fails returns 2 from dstack_payload; env.sh and secrets.env under umask 077).
  cd "$d" && dstack_payload
  s_rc=$?
  umask 022
  cd "$s_base" || return 2
  [ "$s_rc" = 0 ] || { echo "E error cannot write the job's files in $d"; dstack_release_locks "$s_base" "$s_job"; return 2; }
  [ "${10}" = 1 ] && printf 'export CUDA_VISIBLE_DEVICES=%s\n' "$s_cuda" >> "$d/env.sh"
  : > "$d/log" || { echo "E error cannot create $d/log"; dstack_release_locks "$s_base" "$s_job"; return 2; }
  # The subshell makes the wrapper nobody's child here, so a wrapper killed outright is seen gone rather than as a
  # zombie of this shell. 3<&-: the job must never see the agent's request stream (other jobs' payloads come on it).
  if [ -n "$dstack_session" ]; then
    # The wrapper is a forked subshell of this shell (no exec); the job's commands get their own session and
    # process group from setsid, so a dropped connection does not end them and a stop reaches all of them.
    (dstack_wrap "$d" "$9" "$s_base" "$dstack_boot" "$s_attempt" session </dev/null >/dev/null 2>&1 3<&- &)
  else
    # Without /proc the wrapper cannot learn its own pid in a subshell: it runs as a script in a session of its
    # own (one file per work folder and wrapper text, its name holding a hash of the text, written once).
    s_wrapper="$s_base/$dstack_wrapper_name"
    if [ ! -f "$s_wrapper" ]; then
      printf '%s' "$dstack_wrapper" > "$s_wrapper.$$" && mv -f "$s_wrapper.$$" "$s_wrapper" ||
        { echo "E error cannot write $s_wrapper"; dstack_release_locks "$s_base" "$s_job"; return 2; }
    fi
    (setsid /bin/sh "$s_wrapper" "$d" "$9" "$s_base" "$dstack_boot" "$s_attempt" </dev/null >/dev/null 2>&1 3<&- &)
  fi
  echo launched >> "$d/attempt"
  echo "E launched"
  return 0
}

# dstack_wrap JOBDIR WORKDIR RUNNERDIR BOOTID ATTEMPT session: wrapper.sh's text, run in the calling subshell.
dstack_wrap() {
  eval "$dstack_wrapper"
}

# dstack_payload: evaluates the payload read last (dstack_read_payload) in the job's folder; its lines end with
# `|| return 2`.
dstack_payload() {
  eval "$dstack_payload_text"
}

# dstack_poll BASE JOB OFFSET [JOB OFFSET]...: for each job, its log from byte OFFSET on (D N LENGTH, at most 4 MiB
# a poll) and its state (S N running, S N exit CODE once the whole log was sent, S N gone when its wrapper vanished
# without an exit code, S N missing when it has no folder). A job seen over has its locks released.
dstack_poll() {
  cd "$1" 2>/dev/null || return 2
  shift
  p_n=0
  while [ $# -ge 2 ]; do
    p_d="jobs/$1" p_off=$2
    shift 2
    if [ ! -d "$p_d" ]; then echo "S $p_n missing"; p_n=$((p_n + 1)); continue; fi
    # Done once `exit` holds a whole line (the wrapper writes it in place: an empty or partial file is not yet).
    p_done="" p_code=""
    { read -r p_code < "$p_d/exit"; } 2>/dev/null && p_done=1
    # An empty log needs no wc (most polls of a quiet job): `-s` is a builtin test.
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
      # Exactly p_len bytes, whatever happens to the log meanwhile (a log cut short by someone else is padded
      # with NULs rather than leaving the frame short, which would garble every later answer).
      tail -c +$((p_off + 1)) "$p_d/log" | dd bs="$p_len" count=1 iflag=fullblock conv=sync 2>/dev/null
    fi
    if [ -n "$p_more" ]; then
      echo "S $p_n running"
    elif [ -n "$p_done" ]; then
      echo "S $p_n exit $p_code"
      # It is over: its slot and GPUs go back (with the next removal; its folder stays until its results are stored).
      dstack_release_later "$PWD" "${p_d#jobs/}"
    else
      p_pid="" p_boot=""
      { read -r p_pid p_boot < "$p_d/pid"; } 2>/dev/null
      if [ -n "$p_pid" ] && { [ -n "$p_boot" ] && [ "$p_boot" != "$dstack_boot" ] || ! kill -0 "$p_pid" 2>/dev/null; }; then
        # The wrapper may have written its exit code just now.
        if { read -r p_code < "$p_d/exit"; } 2>/dev/null; then echo "S $p_n running"; else echo "S $p_n gone"; dstack_release_locks "$PWD" "${p_d#jobs/}"; fi
      else
        echo "S $p_n running"
      fi
    fi
    p_n=$((p_n + 1))
  done
  return 0
}

# dstack_stop JOBDIR: stops a job: its container if it has one, TERM to its process group, KILL after 5 seconds;
# nothing is signalled once the job wrote its exit code (its pid may belong to another process by then).
dstack_stop() {
  cd "$1" 2>/dev/null || return 0
  [ -f exit ] && return 0
  [ -f container ] && read -r t_engine t_name < container && "$t_engine" stop -t 5 "$t_name" >/dev/null 2>&1
  # `WRAPPER BOOT`, and on a second line the job's process group where it is not the wrapper's own (see
  # wrapper.sh; a wrapper that has not launched the job yet has not written it: it is looked for again below).
  t_pid="" t_boot="" t_group=""
  { { read -r t_pid t_boot _; read -r t_group _; } < pid; } 2>/dev/null
  [ -n "$t_pid" ] || return 0
  [ -n "$t_boot" ] && [ "$t_boot" != "$dstack_boot" ] && return 0
  [ -f exit ] && return 0
  t_group=${t_group:-$t_pid}
  kill -TERM -"$t_group" 2>/dev/null || kill -TERM "$t_group" 2>/dev/null || return 0
  t_i=0
  while [ "$t_i" -lt 50 ] && kill -0 "$t_pid" 2>/dev/null && [ ! -f exit ]; do
    sleep 0.1
    t_i=$((t_i + 1))
    t_now=""
    { { read -r _; read -r t_now _; } < pid; } 2>/dev/null
    if [ -n "$t_now" ] && [ "$t_now" != "$t_group" ]; then t_group=$t_now; kill -TERM -"$t_group" 2>/dev/null; fi
  done
  [ -f exit ] || { kill -0 "$t_pid" 2>/dev/null && kill -KILL -"$t_group" 2>/dev/null; }
  return 0
}

# dstack_finish BASE RELEASE JOB...: releases the jobs' locks (RELEASE 1) and removes their folders.
dstack_finish() {
  f_base=$1 f_release=$2
  shift 2
  # Plain names only (checked below): split as words; all removed by one rm.
  f_jobs=$*
  set --
  for f_job in $f_jobs; do
    case $f_job in *[!A-Za-z0-9._-]*|.|..|"") continue ;; esac
    [ "$f_release" = 1 ] && dstack_release_later "$f_base" "$f_job"
    set -- "$@" "$f_base/jobs/$f_job" "$f_base/jobs/$f_job.deps" "$f_base/jobs/.start-$f_job"
  done
  dstack_flush "$@"
}

# dstack_release BASE JOB: releases the job's locks, keeping its folder.
dstack_release() {
  dstack_flush
  dstack_release_locks "$1" "$2"
}

# dstack_probe WORKDIR: what the runner has, as K lines.
dstack_probe() {
  dstack_flush
  mkdir -p "$1" 2>/dev/null
  echo "K os $(uname -s) $(uname -m)"
  echo "K cpus $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
  awk '/^MemTotal:/ { print "K memory_kb", $2 }' /proc/meminfo 2>/dev/null
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/K gpu /'
  fi
  # An engine counts only when it answers: a docker client with no daemon behind it cannot run anything.
  for e in docker podman; do
    command -v "$e" >/dev/null 2>&1 && "$e" version >/dev/null 2>&1 && { echo "K engine $e"; break; }
  done
  df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print "K disk_free_kb", $4 }'
  for l in "$1"/locks/slot-* "$1"/locks/gpu-*; do
    o_of=$l
    [ -d "$l" ] && o_of=$l/owner
    [ -f "$o_of" ] && { read -r o_owner < "$o_of"; echo "K lock ${l##*/} $o_owner"; }
  done
  # The python3.X interpreters on PATH (the login shell's: conda and pyenv included), for jobs that ask for one.
  IFS=:
  for d in $PATH; do
    for p in "$d"/python3.[0-9] "$d"/python3.[0-9][0-9]; do [ -x "$p" ] && echo "K python ${p##*/python}"; done
  done
  unset IFS
  return 0
}

# dstack_tree_status BASE SNAPSHOT: K present when the runner has the snapshot's tree; else K base ID and the
# latest tree's manifest as K line ... (hash mode path), from which the new tree is built by difference.
dstack_tree_status() {
  cd "$1" 2>/dev/null || return 0
  [ -d "trees/$2/" ] && { echo "K present"; return 0; }
  t_latest=""
  { read -r t_latest < trees/latest; } 2>/dev/null
  [ -n "$t_latest" ] && [ -d "trees/$t_latest/" ] && [ -f "trees/$t_latest.manifest" ] || return 0
  echo "K base $t_latest"
  sed 's/^/K line /' "trees/$t_latest.manifest"
  return 0
}

# dstack_ping: answers at once (a liveness check).
dstack_ping() {
  return 0
}

# The boot id: a pid recorded before a reboot must not be taken for a process that runs now.
dstack_boot=""
{ read -r dstack_boot < /proc/sys/kernel/random/boot_id; } 2>/dev/null
dstack_agent_pid=$$
dstack_home=$PWD
# Wrappers run as subshells of the agent where they can learn their own pid (/proc) and setsid is there.
dstack_session=""
[ -r /proc/self/stat ] && command -v setsid >/dev/null 2>&1 && dstack_session=1
# On a line of its own: the login shell may have printed something without a newline.
printf '\ndstack-agent ready %s\n' "$$"
while IFS= read -r dstack_request <&3; do
  case $dstack_request in
    dstack_[a-z_]*) ;;
    *) echo "E error not a request: ${dstack_request%% *}"; echo ". 6"; continue ;;
  esac
  # The request's arguments are single-quoted words: eval only splits them. No subshell (a process per request):
  # the functions keep to their own variables and return, and each request starts from the agent's folder.
  cd "$dstack_home" 2>/dev/null || true
  eval "$dstack_request"
  echo ". $?"
done
dstack_flush
exit 0
