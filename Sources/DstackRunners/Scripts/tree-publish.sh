# shellcheck shell=sh disable=SC2154  # id and b come from the tree build this is appended to
# The end of both tree builds (appended to them): publishes the tree built in $b/repo (manifest in $b.manifest) as
# $id with an atomic `ln -s`, so no job ever copies a half-built tree and two coordinators building the same one both
# succeed; then removes trees unused for 7 days (a job copies its tree when it starts).
[ -L "$id" ] && [ ! -d "$id/" ] && rm -f "$id" "$id.manifest"
if ln -s "$b/repo" "$id" 2>/dev/null; then
  mv -f "$b.manifest" "$id.manifest"
  echo "$id" > "latest.tmp.$3" && mv -f "latest.tmp.$3" latest
else
  rm -rf "$b" "$b.manifest"
fi
for t in *; do
  [ -L "$t" ] && [ "$t" != "$id" ] || continue
  [ -n "$(find "$t/" -maxdepth 0 -mtime +7 2>/dev/null)" ] || continue
  target=$(readlink "$t")
  rm -f "$t" "$t.manifest"
  # A link to .b-X/repo (or, made by an older dstack, to .b-X itself): the whole .b-X goes.
  case $target in .b-*) rm -rf "${target%/repo}" ;; esac
done
[ -d "$id/" ] && touch "$id/"
# And Python environments unused for 7 days (python-env.sh, which comes before this text).
dstack_python_env_reap ..
exit 0
