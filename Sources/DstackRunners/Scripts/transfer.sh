#!/bin/sh
# transfer.sh MODE ...: moves artifact bytes between this runner and a bucket by itself, with presigned URLs only
# (docs/transfers.md). URLs arrive on standard input, never as arguments, so `ps` shows none; nothing is written to
# a file but the bytes themselves and, for a part, its response headers.
#
#   transfer.sh tool               K tool curl|wget|python3 (the first found); K hash 1 when md5sum and sha256sum exist
#   transfer.sh list REPO MIN EXCLUDE PATH...
#                                  `F MODE SIZE PATH` for each plain file (never a link) of more than MIN bytes
#                                  that is an artifact PATH or, where tar is GNU tar (`K gnutar 1`), lies in one;
#                                  only names of plain characters. Their names go to EXCLUDE, one a line, for tar.
#   TOOL `cp` stands for a storage directory the runner mounts: each URL is then a path in it.
#   transfer.sh reach TOOL         stdin: one URL (a GET). K reach STATUS: the HTTP status, 000 when nothing answered
#   transfer.sh put TOOL DIR JOBS  stdin: `f INDEX PATH` per file, then `p INDEX NUMBER OFFSET LENGTH URL` per part.
#                                  Sends JOBS parts at once, each tried 4 times. Prints `h INDEX SHA256` per file,
#                                  `p INDEX NUMBER MD5 ETAG` per stored part, `b BYTES` as parts land, and
#                                  `x INDEX NUMBER WHY` for a part that never landed (then exits 3).
#   transfer.sh get TOOL DIR JOBS  stdin: `g SIZE MODE SHA256 URL PATH` per file (SHA256 `-` when unknown). Places
#                                  each file under DIR (whole or not at all), checked for size and SHA-256. Prints
#                                  `d PATH`, `b BYTES`, and `x 0 0 WHY` for a file that could not be had (exits 3).
set -u
# Seconds between tries grow as 2, 4, 8 times this (tests make it 0).
t_nap=${DSTACK_TRANSFER_NAP:-1}
mode=$1
shift

t_tool() {
  if command -v curl >/dev/null 2>&1; then
    echo "K tool curl"
  elif command -v wget >/dev/null 2>&1 && wget --help 2>&1 | grep -q -- '--method'; then
    echo "K tool wget"
  elif command -v python3 >/dev/null 2>&1; then
    echo "K tool python3"
  fi
  command -v md5sum >/dev/null 2>&1 && command -v sha256sum >/dev/null 2>&1 && echo "K hash 1"
  return 0
}

# The Python stand-in for curl: `python3 -c PROGRAM METHOD FILE HEADERS` with the URL on stdin; PUT sends FILE,
# GET writes it; response headers go to HEADERS; exits 0 on 2xx.
t_python='
import sys, urllib.request, urllib.error, os
method, path, headers = sys.argv[1], sys.argv[2], sys.argv[3]
url = sys.stdin.readline().strip()
try:
    if method == "PUT":
        size = os.path.getsize(path)
        with open(path, "rb") as body:
            request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
            response = urllib.request.urlopen(request, timeout=300)
    else:
        response = urllib.request.urlopen(url, timeout=300)
        if method == "GET":
            with open(path, "wb") as out:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
    status = response.status
except urllib.error.HTTPError as error:
    response, status = error, error.code
except Exception as error:
    sys.stderr.write("%s\n" % error)
    sys.exit(7)
with open(headers, "w") as out:
    out.write("HTTP %d\n" % status)
    for name, value in response.getheaders():
        out.write("%s: %s\n" % (name, value))
sys.exit(0 if 200 <= status < 300 else 22)
'

# t_http TOOL METHOD FILE HEADERS URL: one request; PUT sends FILE, GET writes FILE; headers to HEADERS.
t_http() {
  case $1 in
    curl)
      # The URL goes in a config read from stdin (printf is a builtin: no process shows it).
      case $2 in
        PUT) printf 'url = "%s"\n' "$5" | curl -sS -f -g --speed-limit 1 --speed-time 120 -H 'Expect:' -T "$3" -D "$4" -o /dev/null -K - ;;
        GET) printf 'url = "%s"\n' "$5" | curl -sS -f -g --speed-limit 1 --speed-time 120 -D "$4" -o "$3" -K - ;;
        *) printf 'url = "%s"\n' "$5" | curl -sS -g -D "$4" -o /dev/null -w '%{http_code}' -K - ;;
      esac
      ;;
    wget)
      case $2 in
        PUT) printf '%s\n' "$5" | wget -q --timeout=120 --tries=1 --server-response --header='Content-Type: application/octet-stream' --method=PUT --body-file="$3" -O /dev/null -i - 2>"$4" ;;
        GET) printf '%s\n' "$5" | wget -q --timeout=120 --tries=1 --server-response -O "$3" -i - 2>"$4" ;;
        *) printf '%s\n' "$5" | wget -q --timeout=120 --tries=1 --server-response -O /dev/null -i - 2>"$4"
           sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$4" | tail -n 1 ;;
      esac
      ;;
    cp)
      # A storage directory this runner mounts: the "URL" is a path in it. The copy arrives under a temporary
      # name, is hashed there (its MD5 stands for the bucket's ETag), then renamed into place.
      case $2 in
        PUT) mkdir -p "${5%/*}" && cp "$3" "$5.dstack-in-$$" &&
               printf 'ETag: %s\n' "$(md5sum < "$5.dstack-in-$$" | cut -d ' ' -f 1)" > "$4" &&
               mv -f "$5.dstack-in-$$" "$5" || { rm -f "$5.dstack-in-$$"; return 1; } ;;
        GET) cp "$5" "$3" && : > "$4" ;;
        *) if [ -f "$5" ]; then echo 200; else echo 000; fi ;;
      esac
      ;;
    python3)
      printf '%s\n' "$5" | python3 -c "$t_python" "$2" "$3" "$4"
      t_rc=$?
      case $2 in PUT|GET) return "$t_rc" ;; esac
      sed -n 's/^HTTP \([0-9]*\)$/\1/p' "$4"
      ;;
    *) return 9 ;;
  esac
}

# The ETag of a response's headers, quotes removed.
t_etag() {
  tr -d '\r' < "$1" | sed -n 's/^ *[Ee][Tt][Aa][Gg]: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' | tail -n 1
}

t_size() {
  wc -c < "$1" | tr -d ' '
}

# t_range FILE OFFSET LENGTH: those bytes of FILE (offsets and lengths of parts are whole MiB but the last length).
t_range() {
  dd if="$1" bs=1048576 skip=$(($2 / 1048576)) count=$((($3 + 1048575) / 1048576)) 2>/dev/null
}

# t_part TOOL DIR INDEX NUMBER OFFSET LENGTH URL: stores one part (4 tries); prints its `p` or `x` line.
# curl reads a part straight from the file (read twice: for its MD5, then to send it); the other tools get a copy
# of it in a file of its own.
t_part() {
  p_file=$(sed -n "s/^f $3 //p" "$t_work/in" | head -n 1)
  p_src="$2/$p_file"
  p_copy="$t_work/part.$3.$4"
  p_try=1
  p_why="no attempt"
  while [ "$p_try" -le 4 ]; do
    [ "$p_try" -gt 1 ] && sleep $((p_try * p_try / 2 * t_nap))
    p_try=$((p_try + 1))
    p_body=$p_copy
    if [ "$5" = 0 ] && [ "$(t_size "$p_src")" = "$6" ]; then
      p_body=$p_src
    elif [ "$1" = curl ]; then
      p_body=-
    elif ! t_range "$p_src" "$5" "$6" > "$p_copy"; then
      p_why="cannot read bytes $5+$6 of '$p_file'"
      continue
    fi
    if [ "$p_body" = - ]; then
      p_md5=$(t_range "$p_src" "$5" "$6" | md5sum | cut -d ' ' -f 1)
      # The URL goes to curl's config on its stdin, the bytes on descriptor 5; the length is told, never chunked.
      p_ok=1
      p_out=$(t_range "$p_src" "$5" "$6" | { printf 'url = "%s"\n' "$7" | curl -sS -f -g --speed-limit 1 --speed-time 120 \
        -H 'Expect:' -H "Content-Length: $6" -T /dev/fd/5 -D "$t_work/headers.$3.$4" -o /dev/null -K - 2>&1 || echo "(failed)"; } 5<&0)
      case $p_out in *"(failed)"*) p_ok=0 ;; esac
    else
      if [ "$(t_size "$p_body")" != "$6" ]; then
        p_why="'$p_file' changed while it was sent (part $4 has $(t_size "$p_body") bytes, not $6)"
        continue
      fi
      p_md5=$(md5sum < "$p_body" | cut -d ' ' -f 1)
      p_ok=1
      p_out=$(t_http "$1" PUT "$p_body" "$t_work/headers.$3.$4" "$7" 2>&1) || p_ok=0
    fi
    if [ "$p_ok" = 0 ]; then
      p_why="the bucket refused it or did not answer: $(printf '%s' "$p_out" | tr '\n' ' ' | cut -c 1-200)"
      continue
    fi
    p_etag=$(t_etag "$t_work/headers.$3.$4")
    if [ "$p_etag" != "$p_md5" ]; then
      p_why="it arrived damaged or '$p_file' changed while it was sent (the bucket's MD5 $p_etag, read $p_md5)"
      continue
    fi
    rm -f "$p_copy" "$t_work/headers.$3.$4"
    echo "p $3 $4 $p_md5 $p_etag"
    echo "b $6"
    return 0
  done
  rm -f "$p_copy"
  echo "x $3 $4 part $4 of '$p_file' never landed after 4 tries: $p_why"
  return 1
}

# t_get TOOL DIR SIZE MODE SHA256 URL PATH: places one file (4 tries); prints its `d` or `x` line.
t_get() {
  g_dest="$2/$7"
  g_tmp="$g_dest.dstack-get-$$"
  g_try=1
  g_why="no attempt"
  mkdir -p "${g_dest%/*}" 2>/dev/null
  while [ "$g_try" -le 4 ]; do
    [ "$g_try" -gt 1 ] && sleep $((g_try * g_try / 2 * t_nap))
    g_try=$((g_try + 1))
    rm -f "$g_tmp"
    if ! g_out=$(t_http "$1" GET "$g_tmp" "$g_tmp.headers" "$6" 2>&1); then
      g_why="the bucket refused it or did not answer: $(printf '%s' "$g_out" | tr '\n' ' ' | cut -c 1-200)"
      continue
    fi
    if [ "$(t_size "$g_tmp")" != "$3" ]; then
      g_why="it arrived with $(t_size "$g_tmp") bytes, not $3"
      continue
    fi
    if [ "$5" != "-" ] && [ "$(sha256sum < "$g_tmp" | cut -d ' ' -f 1)" != "$5" ]; then
      g_why="it arrived damaged (SHA-256 differs from the manifest's)"
      continue
    fi
    rm -f "$g_tmp.headers"
    chmod "$4" "$g_tmp" && mv -f "$g_tmp" "$g_dest" || { g_why="cannot place it"; continue; }
    echo "d $7"
    echo "b $3"
    return 0
  done
  rm -f "$g_tmp" "$g_tmp.headers"
  echo "x 0 0 '$7' could not be downloaded after 4 tries: $g_why"
  return 1
}

t_list() {
  l_min=$2
  l_exclude=$3
  cd "$1" || exit 2
  shift 3
  l_gnu=0
  tar --version 2>/dev/null | grep -q GNU && { l_gnu=1; echo "K gnutar 1"; }
  : > "$l_exclude" || exit 2
  for l_path; do
    if [ -f "$l_path" ] && [ ! -L "$l_path" ]; then
      printf '%s\n' "$l_path"
    elif [ "$l_gnu" = 1 ] && [ -d "$l_path" ] && [ ! -L "$l_path" ]; then
      find "$l_path" -type f -size +"$l_min"c
    fi
  done | while IFS= read -r l_file; do
    # Names with anything but plain characters stay with the relay, which carries any name.
    case $l_file in *[!A-Za-z0-9._/+=,@%-]*) continue ;; esac
    l_line=$(ls -ldn -- "$l_file") || continue
    set -f
    # shellcheck disable=SC2086
    set -- $l_line
    set +f
    [ "$5" -gt "$l_min" ] || continue
    printf 'F %s %s %s\n' "$1" "$5" "$l_file"
    printf '%s\n' "$l_file" >> "$l_exclude"
  done
}

case $mode in
  list)
    t_list "$@"
    ;;
  tool)
    t_tool
    ;;
  reach)
    read -r r_url
    t_work=$(mktemp -d "${TMPDIR:-/tmp}/dstack-transfer.XXXXXX") || exit 2
    r_status=$(t_http "$1" STATUS /dev/null "$t_work/headers" "$r_url" 2>/dev/null)
    rm -rf "$t_work"
    echo "K reach ${r_status:-000}"
    ;;
  put|get)
    t_tool_name=$1
    t_dir=$2
    t_jobs=$3
    mkdir -p "$t_dir" || exit 2
    t_work=$(mktemp -d "$t_dir/.dstack-transfer.XXXXXX") || exit 2
    trap 'rm -rf "$t_work"' EXIT
    trap 'exit 130' INT TERM HUP
    cat > "$t_work/in"
    # A pause before anything moves, set in the runner's environment by tests that stop a coordinator mid-transfer.
    [ -n "${DSTACK_TRANSFER_PAUSE:-}" ] && sleep "$DSTACK_TRANSFER_PAUSE"
    # JOBS tokens in a FIFO: a part (or file) starts when it takes one and gives it back when done, so JOBS
    # transfers run at any moment. Each writes its lines straight to stdout (one short write each, so lines never
    # interleave), and a failure leaves a mark that stops new ones from starting.
    mkfifo "$t_work/tokens" || exit 2
    exec 3<>"$t_work/tokens"
    t_i=0
    while [ "$t_i" -lt "$t_jobs" ]; do echo >&3; t_i=$((t_i + 1)); done
    if [ "$mode" = put ]; then
      # Each file's SHA-256, read beside the uploads (for the manifest; the parts are checked by MD5).
      while read -r f_kind f_index f_path; do
        [ "$f_kind" = f ] || continue
        (h=$(sha256sum < "$t_dir/$f_path" | cut -d ' ' -f 1) && echo "h $f_index $h") > "$t_work/hash.$f_index" &
      done < "$t_work/in"
    fi
    t_n=0
    while read -r l_kind l_a l_b l_c l_d l_e l_f; do
      case $l_kind in p|g) ;; *) continue ;; esac
      read -r _ <&3
      [ -e "$t_work/failed" ] && break
      case $l_kind in
        p) (t_part "$t_tool_name" "$t_dir" "$l_a" "$l_b" "$l_c" "$l_d" "$l_e" || : > "$t_work/failed"; echo >&3) & ;;
        g) t_n=$((t_n + 1))
           # The path is the rest of the line, as written (read would squeeze its spaces).
           g_path=$(sed -n "/^g /{s/^g [^ ]* [^ ]* [^ ]* [^ ]* //p;}" "$t_work/in" | sed -n "${t_n}p")
           (t_get "$t_tool_name" "$t_dir" "$l_a" "$l_b" "$l_c" "$l_d" "$g_path" || : > "$t_work/failed"; echo >&3) & ;;
      esac
      : "$l_f"
    done < "$t_work/in"
    wait
    cat "$t_work"/hash.* 2>/dev/null
    t_failed=0
    [ -e "$t_work/failed" ] && t_failed=1
    [ "$t_failed" = 0 ] || exit 3
    ;;
  *)
    echo "transfer.sh: unknown mode '$mode'" >&2
    exit 2
    ;;
esac
exit 0
