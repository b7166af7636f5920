#!/bin/sh
# Render mosquitto's ACL file from mosquitto/acl.template for a base topic and a Home
# Assistant discovery prefix, with one section per remote site's bridge account:
#   deploy/render-acl.sh [--base minerwatch] [--discovery homeassistant] [--site NAME]... > acl
# POSIX sh and sed only, so it runs on the host or inside the mosquitto image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
template=${ACL_TEMPLATE:-$here/../mosquitto/acl.template}
base=minerwatch
discovery=homeassistant
sites=""

fail() { echo "render-acl.sh: $*" >&2; exit 2; }
# One topic level (or account name): no wildcards, separators or spaces (the ACL is line
# based, and a site's name is also its account and client id).
level() {
  case "$2" in
    ""|*[!A-Za-z0-9_-]*) fail "$1 '$2' must be letters, digits, _ or -" ;;
  esac
}

while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || fail "$1 needs a value"
  case "$1" in
    --base) level --base "$2"; base=$2 ;;
    --discovery) level --discovery "$2"; discovery=$2 ;;
    --site) level --site "$2"; sites="$sites $2" ;;
    *) fail "unknown argument $1" ;;
  esac
  shift 2
done
[ -r "$template" ] || fail "cannot read the template $template"

# A site's account is its own: not one of the template's accounts, nor another the
# deployment makes (deploy/init.sh), nor given twice.
taken=" reader healthcheck $(sed -n 's/^user  *//p' "$template" | tr '\n' ' ')"
for site in $sites; do
  case "$taken" in
    *" $site "*) fail "site '$site' is already an account in the ACL" ;;
  esac
  taken="$taken$site "
done

echo "# Rendered by deploy/render-acl.sh from mosquitto/acl.template (base topic $base," \
  "discovery prefix $discovery): edit the template and render again, not this file."
echo
# Comment lines stay as written: they describe the template's placeholders.
sed -e "/^#/!s/@BASE@/$base/g" -e "/^#/!s/@DISCOVERY@/$discovery/g" "$template"
for site in $sites; do
  # A remote site's bridge publishes what its collector publishes, under the site's own
  # account (its client id too); the commands it brings back it reads as every account does.
  printf '\n# Remote site %s: its broker bridges its collector here (mosquitto/bridge.conf).\n' \
    "$site"
  printf 'user %s\n' "$site"
  for kind in sample status info tune command/result; do
    printf 'topic write %s/miners/+/%s\n' "$base" "$kind"
  done
  printf 'topic write %s/replies/#\ntopic write %s/services/collector/#\n' "$base" "$base"
  # and its collector's Home Assistant discovery configs, with HA's birth message back.
  printf 'topic write %s/+/%s/#\ntopic read %s/status\n' "$discovery" "$base" "$discovery"
done
