/// Shell scripts the runners run, the same on this machine and over SSH: they need only `sh`, `mkdir`, `cat`,
/// `tail` and `kill`. Every variable part travels as a positional argument, never inside the script text.
enum RunnerScripts {
    /// Takes a job slot and GPUs with atomic `mkdir` locks under `$1/locks`; prints the slot, then the GPUs.
    /// Arguments: base, job id, slots, GPU indices (space-separated), GPUs needed, owner. Exit 3: no free slot;
    /// exit 4: not enough free GPUs (nothing is kept then).
    static let acquire = #"""
    base=$1 job=$2 max=$3 gpus=$4 need=$5 owner=$6
    mkdir -p "$base/locks" || exit 2
    # Held already by this job (a coordinator resuming it): report what it holds.
    if [ -f "$base/locks/held-$job" ]; then
      slot="" got=""
      for l in $(cat "$base/locks/held-$job"); do
        case $l in slot-*) slot=${l#slot-} ;; gpu-*) got="$got ${l#gpu-}" ;; esac
      done
      echo "$slot"
      echo $got
      exit 0
    fi
    # Reclaim locks whose job is over: it wrote its exit code, or its process is gone; or, when it never got a
    # job directory, the lock is older than 10 minutes (its coordinator died before preparing it).
    for l in "$base"/locks/slot-* "$base"/locks/gpu-*; do
      [ -d "$l" ] || continue
      holder=$(cut -d' ' -f1 "$l/owner" 2>/dev/null)
      jd="$base/jobs/$holder"
      if [ -n "$holder" ] && { [ -f "$jd/exit" ] || { [ -f "$jd/pid" ] && ! kill -0 "$(cat "$jd/pid")" 2>/dev/null; }; }; then
        rm -rf "$l"
      elif [ ! -d "$jd" ] && [ -n "$(find "$l" -maxdepth 0 -mmin +10 2>/dev/null)" ]; then
        rm -rf "$l"
      fi
    done
    held="" slot=""
    i=0
    while [ "$i" -lt "$max" ]; do
      if mkdir "$base/locks/slot-$i" 2>/dev/null; then
        printf '%s %s\n' "$job" "$owner" > "$base/locks/slot-$i/owner"
        slot=$i held="slot-$i"
        break
      fi
      i=$((i + 1))
    done
    [ -n "$slot" ] || exit 3
    got="" n=0
    for g in $gpus; do
      [ "$n" -ge "$need" ] && break
      if mkdir "$base/locks/gpu-$g" 2>/dev/null; then
        printf '%s %s\n' "$job" "$owner" > "$base/locks/gpu-$g/owner"
        got="$got $g" held="$held gpu-$g" n=$((n + 1))
      fi
    done
    if [ "$n" -lt "$need" ]; then
      for l in $held; do rm -rf "$base/locks/$l"; done
      exit 4
    fi
    echo "$held" > "$base/locks/held-$job"
    echo "$slot"
    echo $got
    """#

    /// Releases what `acquire` took for a job. Arguments: base, job id.
    static let release = #"""
    base=$1 job=$2
    if [ -f "$base/locks/held-$job" ]; then
      for l in $(cat "$base/locks/held-$job"); do
        # Only while it is still this job's: a lock reclaimed and taken by another job is not ours to remove.
        [ "$(cut -d' ' -f1 "$base/locks/$l/owner" 2>/dev/null)" = "$job" ] && rm -rf "$base/locks/$l"
      done
      rm -f "$base/locks/held-$job"
    fi
    """#

    /// The wrapper every job runs under: `$1` is the job directory, `$2` the working directory inside `repo/`.
    /// It records its pid, sources `env.sh`, runs `run.sh` (the commands, or the container that runs them) and
    /// writes the exit code atomically at the end; it catches TERM so that, when the job is stopped, it still
    /// records how the commands ended.
    static let launch = #"""
    echo $$ > "$1/pid.tmp" && mv "$1/pid.tmp" "$1/pid"
    trap 'true' TERM INT HUP
    [ -f "$1/env.sh" ] && . "$1/env.sh"
    cd "$1/repo/$2" 2>/dev/null || {
      echo "dstack: working_dir '$2' does not exist in the repository" >> "$1/log"
      echo 1 > "$1/exit.tmp" && mv "$1/exit.tmp" "$1/exit"
      exit 0
    }
    /bin/sh "$1/run.sh" "$1" "$2" >> "$1/log" 2>&1 < /dev/null &
    child=$!
    wait $child
    code=$?
    while kill -0 $child 2>/dev/null; do wait $child; code=$?; done
    echo $code > "$1/exit.tmp" && mv "$1/exit.tmp" "$1/exit"
    """#

    /// Streams a job's log from byte `$2` on, until the job has exited, then prints its exit code on stderr.
    /// Exit 0 with the code on stderr; exit 99 when the job's process is gone without an exit code.
    static let follow = #"""
    cd "$1" || exit 98
    off=$2
    while :; do
      finished=""
      [ -f exit ] && finished=1
      size=$(wc -c < log 2>/dev/null || echo 0)
      if [ "$size" -gt "$off" ]; then
        tail -c +$((off + 1)) log | head -c $((size - off))
        off=$size
        continue
      fi
      if [ -n "$finished" ]; then cat exit >&2; exit 0; fi
      if [ -f pid ] && ! kill -0 "$(cat pid)" 2>/dev/null; then
        sleep 0.3
        [ -f exit ] && continue
        exit 99
      fi
      sleep 0.2
    done
    """#

    /// Fills `$1/repo` from the content-addressed objects in `$2`, reading `hash mode path` lines on stdin.
    static let materialize = #"""
    job=$1 objects=$2
    rm -rf "$job" && mkdir -p "$job/repo" || exit 2
    while IFS=' ' read -r hash mode path; do
      case "$path" in */*) mkdir -p "$job/repo/${path%/*}" ;; esac
      cp "$objects/$hash" "$job/repo/$path" && chmod "$mode" "$job/repo/$path" || exit 3
    done
    """#

    /// Prints the names of the objects in `$1` (one per line), creating the folder if needed.
    static let listObjects = #"""
    mkdir -p "$1" && cd "$1" && ls -1
    """#

    /// Moves the objects extracted into `$1` (an incoming folder inside the objects folder) into its parent,
    /// then removes it.
    static let adoptObjects = #"""
    cd "$1" || exit 2
    for f in *; do [ -e "$f" ] && mv -f "$f" "../$f"; done
    cd .. && rm -rf "${1##*/}"
    """#

    /// Stops a job: its container if it has one, TERM to its process group, KILL after 5 seconds.
    /// Argument: the job directory.
    static let stop = #"""
    cd "$1" 2>/dev/null || exit 0
    [ -f container ] && read -r engine name < container && "$engine" stop -t 5 "$name" >/dev/null 2>&1
    [ -f pid ] || exit 0
    pid=$(cat pid)
    kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || exit 0
    i=0
    while [ $i -lt 50 ] && kill -0 "$pid" 2>/dev/null && [ ! -f exit ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -KILL -"$pid" 2>/dev/null
    exit 0
    """#

    /// Prints what a runner has, one `key value` per line. Argument: the runner's work directory.
    static let probe = #"""
    mkdir -p "$1" 2>/dev/null
    echo "os $(uname -s) $(uname -m)"
    echo "cpus $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
    awk '/^MemTotal:/ { print "memory_kb", $2 }' /proc/meminfo 2>/dev/null
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu /'
    fi
    # An engine counts only when it answers: a docker client with no daemon behind it cannot run anything.
    for e in docker podman; do
      command -v $e >/dev/null 2>&1 && $e version >/dev/null 2>&1 && { echo "engine $e"; break; }
    done
    df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print "disk_free_kb", $4 }'
    for l in "$1"/locks/slot-* "$1"/locks/gpu-*; do [ -f "$l/owner" ] && echo "lock ${l##*/} $(cat "$l/owner")"; done
    exit 0
    """#
}
