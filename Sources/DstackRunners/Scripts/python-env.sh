# Python environments for jobs. dstack puts this text ahead of a job's commands, followed by one call of
# dstack_python_env with its arguments quoted; it runs under `sh -e` in the job's working directory.
#
# dstack_python_env VERSION REQUIREMENTS
#   Makes the rest of the job run with Python VERSION (empty: the runner's python3) and the packages of the
#   requirements file REQUIREMENTS (empty: none). On a runner ($DSTACK_RUNNER_DIR, its work directory), that is
#   a virtual environment, pyenvs/KEY, KEY being a hash of the interpreter and of the requirements file's content:
#   built once (`python -m venv`, then `pip install -r`) under a lock, so that jobs starting together build it
#   once, reused by later jobs, and put first on PATH. In a container (where the runner's directory is not), the
#   image's own Python installs the requirements, as early dstack did.
#
# dstack_python_env_reap DIR
#   Removes the environments under DIR/pyenvs unused for 7 days, unless a job still running uses one.

dstack_python_env() {
  pe_version=$1 pe_req=$2 pe_built=""
  pe_python=python3
  if [ -n "$pe_version" ]; then pe_python=python$pe_version; fi
  if [ -z "${DSTACK_RUNNER_DIR:-}" ] || [ ! -d "$DSTACK_RUNNER_DIR/jobs" ]; then
    command -v "$pe_python" >/dev/null 2>&1 || pe_python=python
    if [ -n "$pe_req" ]; then "$pe_python" -m pip install -r "$pe_req" || return 1; fi
    return 0
  fi
  pe_bin=$(command -v "$pe_python" 2>/dev/null) || {
    echo "dstack: $pe_python is not installed on this runner" >&2
    return 2
  }
  if [ -n "$pe_req" ] && [ ! -f "$pe_req" ]; then
    echo "dstack: the requirements file '$pe_req' does not exist in $(pwd)" >&2
    return 2
  fi
  pe_about=$("$pe_bin" -c 'import sys; print(sys.version)') || {
    echo "dstack: $pe_bin does not run on this runner" >&2
    return 2
  }
  # The interpreter (its path and exact version) and the requirements as they are on this runner.
  pe_key=$({ printf '%s\n%s\n' "$pe_bin" "$pe_about"; if [ -n "$pe_req" ]; then cat "$pe_req"; fi; } | dstack_python_env_hash)
  pe_dir=$DSTACK_RUNNER_DIR/pyenvs/$pe_key
  mkdir -p "$DSTACK_RUNNER_DIR/pyenvs" || return 2
  # The job's directory names the environment it uses, so that it is not reaped while the job runs.
  pe_job=$DSTACK_RUNNER_DIR/jobs/${DSTACK_JOB_ID:-}
  if [ -n "${DSTACK_JOB_ID:-}" ] && [ -d "$pe_job" ]; then echo "$pe_key" > "$pe_job/pyenv"; fi
  dstack_python_env_lock "$pe_dir.lock"
  if [ -f "$pe_dir/.dstack-ready" ]; then
    touch "$pe_dir/.dstack-ready"
    echo "dstack: reusing Python environment $pe_key ($pe_bin${pe_req:+, $pe_req})"
  else
    echo "dstack: building Python environment $pe_key ($pe_bin${pe_req:+, $pe_req})"
    # A folder without the ready mark is what a builder that died left: start again.
    rm -rf "$pe_dir"
    if ! "$pe_bin" -m venv "$pe_dir"; then
      rm -rf "$pe_dir" "$pe_dir.lock"
      echo "dstack: $pe_bin -m venv failed (on Debian and Ubuntu, the python3-venv package provides it)" >&2
      return 1
    fi
    if [ -n "$pe_req" ] && ! "$pe_dir/bin/python" -m pip install -r "$pe_req"; then
      rm -rf "$pe_dir" "$pe_dir.lock"
      echo "dstack: pip could not install $pe_req" >&2
      return 1
    fi
    : > "$pe_dir/.dstack-ready"
    pe_built=1
  fi
  rm -rf "$pe_dir.lock"
  if [ -n "$pe_built" ]; then dstack_python_env_reap "$DSTACK_RUNNER_DIR"; fi
  VIRTUAL_ENV=$pe_dir
  PATH=$pe_dir/bin:$PATH
  export VIRTUAL_ENV PATH
  unset PYTHONHOME
  return 0
}

# The first 32 hex digits of the SHA-256 of stdin (a CRC where no SHA-256 tool is installed).
dstack_python_env_hash() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256
  else cksum
  fi | { read -r ph_sum _; printf '%.32s\n' "$ph_sum"; }
}

# Takes the lock folder $1 (an atomic mkdir), waiting while a live process holds it. A lock whose holder is gone
# (or that never got a holder within a minute) is broken, under a second lock so that two waiters never both
# break it and then both take it.
dstack_python_env_lock() {
  pl_said=""
  while ! mkdir "$1" 2>/dev/null; do
    pl_pid=""
    { read -r pl_pid < "$1/pid"; } 2>/dev/null || true
    if { [ -n "$pl_pid" ] && ! kill -0 "$pl_pid" 2>/dev/null; } \
        || { [ -z "$pl_pid" ] && [ -n "$(find "$1" -maxdepth 0 -mmin +1 2>/dev/null)" ]; }; then
      if mkdir "$1.break" 2>/dev/null; then
        pl_now=""
        { read -r pl_now < "$1/pid"; } 2>/dev/null || true
        if [ "$pl_now" = "$pl_pid" ]; then rm -rf "$1"; fi
        rmdir "$1.break"
        continue
      fi
      if [ -n "$(find "$1.break" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then rmdir "$1.break" 2>/dev/null || true; fi
    fi
    if [ -z "$pl_said" ]; then
      echo "dstack: waiting for another job to build the same Python environment"
      pl_said=1
    fi
    sleep 1
  done
  echo $$ > "$1/pid"
}

dstack_python_env_reap() {
  pr_base=$1
  [ -d "$pr_base/pyenvs" ] || return 0
  # Environments named by a job that has no exit code yet are in use.
  pr_keep=" "
  for pr_j in "$pr_base"/jobs/*/pyenv; do
    if [ -f "$pr_j" ] && [ ! -f "${pr_j%/pyenv}/exit" ]; then
      pr_k=""
      { read -r pr_k < "$pr_j"; } 2>/dev/null || true
      pr_keep="$pr_keep$pr_k "
    fi
  done
  for pr_d in "$pr_base"/pyenvs/*/; do
    pr_d=${pr_d%/}
    pr_k=${pr_d##*/}
    case $pr_k in *.lock | *.break | "*") continue ;; esac
    case $pr_keep in *" $pr_k "*) continue ;; esac
    # Last used: its ready mark, touched by every job that uses it; a half-built one counts from its folder.
    pr_mark=$pr_d/.dstack-ready
    [ -f "$pr_mark" ] || pr_mark=$pr_d
    [ -n "$(find "$pr_mark" -maxdepth 0 -mtime +7 2>/dev/null)" ] || continue
    # Under its lock: a job about to use it waits, then builds it again.
    mkdir "$pr_d.lock" 2>/dev/null || continue
    echo $$ > "$pr_d.lock/pid"
    if [ -n "$(find "$pr_mark" -maxdepth 0 -mtime +7 2>/dev/null)" ]; then rm -rf "$pr_d"; fi
    rm -rf "$pr_d.lock"
  done
  return 0
}
