import DstackModel

/// Shell scripts the runners run, the same on this machine and over SSH: they need only `sh`, `mkdir`, `cat`,
/// `tail` and `kill`. Every variable part travels as a positional argument, never inside the script text.
enum RunnerScripts {
    /// `dstack_acquire BASE JOB SLOTS GPUS NEED OWNER`: takes a job slot and GPUs with atomic `mkdir` locks under
    /// `BASE/locks`, setting `slot` and `got` (the GPUs, space-separated). Returns 3 when no slot is free, 4 when
    /// not enough GPUs are (nothing is kept then), 2 when the locks folder cannot be made. Only shell builtins,
    /// `mkdir` and `rm` run in the usual case: every process started here costs the runner CPU for every job.
    static let acquireFunction = #"""
    dstack_acquire() {
      a_base=$1 a_job=$2 a_max=$3 a_gpus=$4 a_need=$5 a_owner=$6
      slot="" got=""
      [ -d "$a_base/locks" ] || mkdir -p "$a_base/locks" || return 2
      # Held already by this job (a coordinator resuming it): report what it holds.
      if [ -f "$a_base/locks/held-$a_job" ]; then
        a_held=""
        { read -r a_held < "$a_base/locks/held-$a_job"; } 2>/dev/null
        for a_l in $a_held; do
          case $a_l in slot-*) slot=${a_l#slot-} ;; gpu-*) got="$got ${a_l#gpu-}" ;; esac
        done
        return 0
      fi
      # Reclaim locks whose job is over: it wrote its exit code, or its process is gone; or, when it never got a
      # job directory, the lock is older than 10 minutes (its coordinator died before preparing it).
      for a_l in "$a_base"/locks/slot-* "$a_base"/locks/gpu-*; do
        [ -d "$a_l" ] || continue
        a_holder="" a_pid=""
        { read -r a_holder a_rest < "$a_l/owner"; } 2>/dev/null
        [ -n "$a_holder" ] || continue
        a_jd="$a_base/jobs/$a_holder"
        if [ -f "$a_jd/exit" ]; then
          rm -rf "$a_l"
        elif [ -f "$a_jd/pid" ]; then
          { read -r a_pid < "$a_jd/pid"; } 2>/dev/null
          [ -n "$a_pid" ] && ! kill -0 "$a_pid" 2>/dev/null && rm -rf "$a_l"
        elif [ ! -d "$a_jd" ] && [ ! -d "$a_jd.deps" ] && [ -n "$(find "$a_l" -maxdepth 0 -mmin +10 2>/dev/null)" ]; then
          rm -rf "$a_l"
        fi
      done
      a_held="" a_i=0
      while [ "$a_i" -lt "$a_max" ]; do
        if mkdir "$a_base/locks/slot-$a_i" 2>/dev/null; then
          printf '%s %s\n' "$a_job" "$a_owner" > "$a_base/locks/slot-$a_i/owner"
          slot=$a_i a_held="slot-$a_i"
          break
        fi
        a_i=$((a_i + 1))
      done
      [ -n "$slot" ] || return 3
      a_n=0
      for a_g in $a_gpus; do
        [ "$a_n" -ge "$a_need" ] && break
        if mkdir "$a_base/locks/gpu-$a_g" 2>/dev/null; then
          printf '%s %s\n' "$a_job" "$a_owner" > "$a_base/locks/gpu-$a_g/owner"
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
      echo "$a_held" > "$a_base/locks/held-$a_job"
      return 0
    }
    """#

    /// Takes a job slot and GPUs (see `acquireFunction`); prints the slot, then the GPUs.
    /// Arguments: base, job id, slots, GPU indices (space-separated), GPUs needed, owner. Exit 3: no free slot;
    /// exit 4: not enough free GPUs (nothing is kept then).
    static let acquire = acquireFunction + "\n" + #"""
    dstack_acquire "$@" || exit $?
    echo "$slot"
    echo $got
    """#

    /// `dstack_release BASE JOB`: releases what `dstack_acquire` took for the job, in one `rm`.
    static let releaseFunction = #"""
    dstack_release() {
      r_base=$1 r_job=$2
      [ -f "$r_base/locks/held-$r_job" ] || return 0
      r_held=""
      { read -r r_held < "$r_base/locks/held-$r_job"; } 2>/dev/null
      set --
      for r_l in $r_held; do
        # Only while it is still this job's: a lock reclaimed and taken by another job is not ours to remove.
        r_holder=""
        { read -r r_holder r_rest < "$r_base/locks/$r_l/owner"; } 2>/dev/null
        [ "$r_holder" = "$r_job" ] && set -- "$@" "$r_base/locks/$r_l"
      done
      rm -rf "$@" "$r_base/locks/held-$r_job"
    }
    """#

    /// Releases what `acquire` took for a job. Arguments: base, job id.
    static let release = releaseFunction + "\n" + #"""
    dstack_release "$1" "$2"
    """#

    /// The wrapper every job runs under: `$1` is the job directory, `$2` the working directory inside `repo/`.
    /// It records its pid, sources `env.sh`, runs `run.sh` (the commands, or the container that runs them) and
    /// writes the exit code atomically at the end; it catches TERM so that, when the job is stopped, it still
    /// records how the commands ended.
    static let launch = #"""
    echo $$ > "$1/pid.tmp" && mv "$1/pid.tmp" "$1/pid"
    trap 'true' TERM INT HUP
    [ -f "$1/env.sh" ] && . "$1/env.sh"
    # secrets: into the environment, and the file (0600) gone before any command of the job runs.
    [ -f "$1/secrets.env" ] && { . "$1/secrets.env"; rm -f "$1/secrets.env"; }
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
    """# + "\n" + followLoop + "\n" + #"""
    cat exit >&2
    exit 0
    """#

    /// In a job's directory, from byte `off` of its log: streams the log as it grows until the job wrote its exit
    /// code (then leaves the loop), or exits 99 when the job's process is gone without one. Naps of 10 ms growing
    /// to 200 ms: a short job is seen finished at once, a long one costs a few processes a second.
    static let followLoop = #"""
    nap=0.01
    while :; do
      finished=""
      [ -f exit ] && finished=1
      size=$(wc -c < log 2>/dev/null || echo 0)
      if [ "$size" -gt "$off" ]; then
        tail -c +$((off + 1)) log | head -c $((size - off))
        off=$size nap=0.05
        continue
      fi
      [ -n "$finished" ] && break
      pid=""
      { read -r pid < pid; } 2>/dev/null
      if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        sleep 0.3
        [ -f exit ] && continue
        exit 99
      fi
      sleep $nap
      case $nap in 0.01) nap=0.02 ;; 0.02) nap=0.05 ;; 0.05) nap=0.1 ;; *) nap=0.2 ;; esac
    done
    """#

    /// Fills `$1/repo` with the snapshot's files: one `cp -R` of the runner's tree of the snapshot (`$3`) when it
    /// has one, else file by file from the content-addressed objects in `$2`, reading `hash mode path` lines on
    /// stdin.
    static let materialize = #"""
    job=$1 objects=$2 tree=$3
    rm -rf "$job" && mkdir -p "$job" || exit 2
    if [ -d "$tree/" ]; then cp -Rp "$tree/." "$job/repo" && exit 0; rm -rf "$job/repo"; fi
    mkdir -p "$job/repo" || exit 2
    while IFS=' ' read -r hash mode path; do
      case "$path" in */*) mkdir -p "$job/repo/${path%/*}" ;; esac
      cp "$objects/$hash" "$job/repo/$path" && chmod "$mode" "$job/repo/$path" || exit 3
    done
    """#

    /// Says whether the runner has the tree of snapshot `$2` under `$1/trees` (`present`), and otherwise prints
    /// the latest tree built there (`base ID`) and its manifest, from which the new tree is built by difference.
    static let treeStatus = #"""
    cd "$1" 2>/dev/null || exit 0
    [ -d "trees/$2/" ] && { echo present; exit 0; }
    base=""
    { read -r base < trees/latest; } 2>/dev/null
    [ -n "$base" ] && [ -d "trees/$base/" ] && [ -f "trees/$base.manifest" ] || exit 0
    echo "base $base"
    cat "trees/$base.manifest"
    """#

    /// Builds the tree of snapshot `$2` under `$1/trees`: a copy of tree `$4` (when not empty) changed by the
    /// lines on stdin (`- path` removes, `+ hash mode path` adds from the objects), or from nothing; then, after
    /// a line `MANIFEST`, the snapshot's manifest, kept for the next build. `$3` is a token unique to this build.
    /// The tree is built aside and published with an atomic `ln -s`, so no job ever copies a half-built tree and
    /// two coordinators building the same one at once both succeed. Trees unused for 7 days are removed.
    static let buildTree = treeHead + "\n" + #"""
    rm -rf "$b"
    # Files of a tree are never changed in place (jobs copy them; a new tree replaces a changed file), so a new
    # tree shares the unchanged files of its base through hard links: creating thousands of files is what costs.
    if [ -n "$base" ] && [ -d "$base/" ]; then
      cp -al "$base/." "$b" 2>/dev/null || { rm -rf "$b"; cp -Rp "$base/." "$b"; } || { rm -rf "$b"; exit 3; }
    else
      mkdir "$b" || exit 2
    fi
    while IFS=' ' read -r op hash mode path; do
      case $op in
        MANIFEST) break ;;
        -) rm -rf "$b/$hash" ;;
        +)
          case "$path" in */*) [ -d "$b/${path%/*}" ] || mkdir -p "$b/${path%/*}" ;; esac
          # rm first: the file may be a link shared with the base tree, which must not change.
          rm -f "$b/$path"
          cp "../objects/$hash" "$b/$path" && chmod "$mode" "$b/$path" || { rm -rf "$b"; exit 3; } ;;
      esac
    done
    cat > "$b.manifest" || exit 2
    """# + "\n" + treePublish

    /// Builds the tree of snapshot `$2` under `$1/trees` from a tar stream on stdin holding its files (paths and
    /// modes) and, as `.dstack-manifest-$3`, its manifest: one `tar` instead of a `cp` and a `chmod` per file,
    /// for a runner's first tree. `$3` is a token unique to this build.
    static let buildTreeFromTar = treeHead + "\n" + #"""
    rm -rf "$b" && mkdir "$b" || exit 2
    tar -C "$b" -xpf - || { rm -rf "$b"; exit 3; }
    mv -f "$b/.dstack-manifest-$3" "$b.manifest" || { rm -rf "$b"; exit 3; }
    """# + "\n" + treePublish

    /// The start of both tree builds: into `$1/trees`, the build folder `b`.
    static let treeHead = #"""
    cd "$1" || exit 2
    id=$2 b=".b-$2-$3" base=$4
    mkdir -p trees || exit 2
    cd trees || exit 2
    """#

    /// The end of both tree builds: publish the tree built in `b` (with its manifest in `b.manifest`) as `id`.
    static let treePublish = #"""
    # A link whose tree is gone (removed by hand) is replaced.
    [ -L "$id" ] && [ ! -d "$id/" ] && rm -f "$id" "$id.manifest"
    if ln -s "$b" "$id" 2>/dev/null; then
      mv -f "$b.manifest" "$id.manifest"
      echo "$id" > latest.tmp.$3 && mv -f latest.tmp.$3 latest
    else
      rm -rf "$b" "$b.manifest"
    fi
    # Trees unused for 7 days go (a job copies its tree when it starts, so only new jobs would need them).
    for t in *; do
      [ -L "$t" ] && [ "$t" != "$id" ] || continue
      [ -n "$(find "$t/" -maxdepth 0 -mtime +7 2>/dev/null)" ] || continue
      target=$(readlink "$t")
      rm -f "$t" "$t.manifest"
      case $target in .b-*) rm -rf "$target" ;; esac
    done
    [ -d "$id/" ] && touch "$id/"
    exit 0
    """#

    /// Starts a job in one remote command: takes its slot and GPUs (exit 3 or 4 when none are free, as
    /// `acquire`), copies the snapshot's tree and any staged dependency artifacts into its directory, writes its
    /// files, launches the wrapper detached, then streams the log on stdout until the job exits and releases the
    /// slot itself. Progress goes to stderr as `dstack:granted SLOT GPUS`, `dstack:launched`, `dstack:exit CODE`,
    /// `dstack:released`; `dstack:error WHY` before exit 2. Exit 5: the runner has no tree of the snapshot (built
    /// before anything is taken). Exit 99: the job's process vanished without an exit code.
    ///
    /// Arguments: work directory, job id, slots, the runner's GPU indices, GPUs needed, owner, snapshot id,
    /// working directory inside `repo/`, `1` to export the held GPUs as `CUDA_VISIBLE_DEVICES`, job directories to
    /// remove first (space-separated ids of finished jobs). `files` are written into the job directory as data.
    static func start(files: [(name: String, text: String)]) -> String {
        var writes = ""
        for (name, text) in files {
            // printf is a builtin: no process per file. The text is one single-quoted word: data, never code.
            let write = "printf '%s' \(shellQuote(text)) > \(shellQuote(name))"
            // secrets: that file is created 0600 (in a subshell, so the job keeps the usual umask).
            writes += (name == SecretsFile.name ? "(umask 077 && \(write))" : write) + " || fail 'cannot write \(name)'\n"
        }
        return acquireFunction + "\n" + releaseFunction + "\n" + #"""
        cd "$1" || { echo "dstack:error cannot enter the work directory $1" >&2; exit 2; }
        base=$PWD job=$2 tree="$PWD/trees/$7" wd=$8
        [ -d "$tree/" ] || exit 5
        for old in ${10}; do rm -rf "jobs/$old"; done
        dstack_acquire "$base" "$job" "$3" "$4" "$5" "$6" || { rc=$?; rm -rf "jobs/$job.deps"; exit $rc; }
        cuda=""
        for g in $got; do cuda="${cuda:+$cuda,}$g"; done
        printf 'dstack:granted %s %s\n' "$slot" "$cuda" >&2
        fail() { echo "dstack:error $1" >&2; cd "$base" && dstack_release "$base" "$job"; exit 2; }
        d="jobs/$job"
        [ -e "$d" ] && rm -rf "$d"
        mkdir -p "$d" && cp -Rp "$tree/." "$d/repo" || fail "cannot copy the code into $base/$d"
        if [ -d "$d.deps" ]; then
          cp -Rp "$d.deps/." "$d/repo/" && rm -rf "$d.deps" || fail "cannot place the dependency artifacts in $base/$d"
        fi
        cd "$d" || fail "cannot enter $base/$d"

        """# + writes + #"""
        [ "$9" = 1 ] && printf 'export CUDA_VISIBLE_DEVICES=%s\n' "$cuda" >> env.sh
        : > log || fail "cannot create the log"
        # setsid: its own session and process group, so a dropped connection does not kill it; the subshell makes
        # it nobody's child here, so a wrapper killed outright is seen gone (not a zombie of this shell).
        (setsid /bin/sh launch.sh "$PWD" "$wd" </dev/null >/dev/null 2>&1 &)
        echo "dstack:launched" >&2
        off=0
        """# + "\n" + followLoop + "\n" + #"""
        code=""
        read -r code < exit
        echo "dstack:exit $code" >&2
        cd "$base" && dstack_release "$base" "$job" && echo "dstack:released" >&2
        exit 0
        """#
    }

    /// Prints the names of the objects in `$1` (one per line), creating the folder if needed.
    static let listObjects = #"""
    mkdir -p "$1" && cd "$1" && ls -1
    """#

    /// Moves the objects extracted into `$1` (an incoming folder inside the objects folder) into its parent,
    /// then removes it: a few `mv` processes for any number of objects (one per object took seconds for 5,000).
    static let adoptObjects = #"""
    cd "$1" || exit 2
    ls -A | xargs -r sh -c 'exec mv -f -- "$@" ..' dstack || exit 3
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
