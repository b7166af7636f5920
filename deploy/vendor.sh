#!/usr/bin/env bash
# Re-fetch every vendored browser file from the npm registry at its pinned version.
#
# Each vendored folder holds a SOURCE file (the pin): package, version, the tarball's sha256
# and sha512 integrity, and one `file = <name here> <path in tarball> <sha256>` line per file.
# For each one this script downloads the tarball with npm (the ordinary client, so the
# registry and proxy settings of npm apply), refuses it unless both checksums match, and
# copies the listed files byte for byte, refusing any whose sha256 differs.
#
#   deploy/vendor.sh          write the files where they live
#   deploy/vendor.sh --check  change nothing; fail if a committed file differs from its pin
#
# To move to another version: edit version, tarball, tarball_sha256, integrity and the file
# sha256s in SOURCE (npm view <package>@<version> dist), then run this script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
API="$ROOT/services/api/src/minerwatch/api"
FOLDERS=(
  "$API/openapi_ui"           # Swagger UI for /schema
  "$API/dashboard/vendor/uplot" # uPlot for the dashboard's charts
)

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

command -v npm >/dev/null || { echo "vendor.sh needs npm (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha256() { sha256sum "$1" | cut -d' ' -f1; }
sha512_integrity() { echo "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }

# The value of `key = value` in a SOURCE file.
source_value() {
  sed -n "s/^$2 = //p" "$1" | head -n1
}

failed=0
for folder in "${FOLDERS[@]}"; do
  source_file="$folder/SOURCE"
  [ -f "$source_file" ] || { echo "missing $source_file" >&2; exit 1; }
  package="$(source_value "$source_file" package)"
  version="$(source_value "$source_file" version)"
  want_tarball="$(source_value "$source_file" tarball_sha256)"
  want_integrity="$(source_value "$source_file" integrity)"
  if [ -z "$package" ] || [ -z "$version" ] || [ -z "$want_tarball" ]; then
    echo "$source_file: needs package, version and tarball_sha256" >&2; exit 1
  fi

  dir="$work/$package"
  mkdir -p "$dir/unpacked"
  tarball="$(cd "$dir" && npm pack --silent --ignore-scripts "$package@$version" | tail -n1)"
  tarball="$dir/$tarball"
  got="$(sha256 "$tarball")"
  if [ "$got" != "$want_tarball" ]; then
    echo "$package@$version: tarball sha256 $got, SOURCE pins $want_tarball: refusing it" >&2
    exit 1
  fi
  if [ -n "$want_integrity" ] && [ "$(sha512_integrity "$tarball")" != "$want_integrity" ]; then
    echo "$package@$version: tarball integrity differs from SOURCE: refusing it" >&2
    exit 1
  fi
  tar -xzf "$tarball" -C "$dir/unpacked"

  while read -r name inner want; do
    [ -n "$name" ] || continue
    case "$name$inner" in */..*|..*|/*) echo "$source_file: bad path in '$name $inner'" >&2; exit 1 ;; esac
    fetched="$dir/unpacked/$inner"
    [ -f "$fetched" ] || { echo "$package@$version: no $inner in the tarball" >&2; exit 1; }
    got="$(sha256 "$fetched")"
    if [ "$got" != "$want" ]; then
      echo "$package@$version: $inner has sha256 $got, SOURCE pins $want: refusing it" >&2
      exit 1
    fi
    if [ "$mode" = check ]; then
      if ! cmp -s "$fetched" "$folder/$name"; then
        echo "differs from $package@$version: ${folder#"$ROOT"/}/$name" >&2
        failed=1
      fi
    else
      install -m 0644 "$fetched" "$folder/$name"
    fi
  done < <(sed -n 's/^file = //p' "$source_file")
  echo "$package@$version -> ${folder#"$ROOT"/}"
done

if [ "$failed" != 0 ]; then
  echo "vendored files differ from their pins: run deploy/vendor.sh (make vendor)" >&2
  exit 1
fi
