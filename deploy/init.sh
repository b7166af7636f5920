#!/bin/sh
# The first of the two commands of deploy/compose.yaml (`make deploy-init`). Writes
#   deploy/.env           from deploy/env.example, a generated password on each empty
#                         *_PASSWORD line, mode 0600; kept if it exists (--force: new one)
#   deploy/broker/acl     rendered from mosquitto/acl.template for the base topic and Home
#                         Assistant prefix in deploy/.env (every run: it follows .env)
#   deploy/broker/passwd  the broker accounts, made with mosquitto_passwd inside the broker
#                         image, owned by its uid 1883, mode 0600; made again whenever .env
#                         is new and when it is missing (accounts added with `user` are in
#                         it only)
# Nothing but Docker (and sh, sed) is needed on the host.
#   deploy/init.sh [--dir DIR] [--force]
#   deploy/init.sh [--dir DIR] user NAME [PASSWORD]   add or change a broker account
#                                                     (`make deploy-user NAME=...`)
# A variable of env.example set in the environment replaces its value in a new .env:
#   MINERWATCH_API_PUBLISH=0.0.0.0:8000 MINERWATCH_BASE_TOPIC=farm make deploy-init
# --dir DIR writes DIR/.env and DIR/broker/ instead (for `docker compose --env-file DIR/.env`).
# MOSQUITTO_IMAGE (environment, else .env, else eclipse-mosquitto:2) is the broker image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$here
force=no
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=${2:?--dir needs a folder}; shift 2 ;;
    --force) force=yes; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/.env
broker_dir=$dir/broker
ACCOUNTS="collector store alerts api admin homeassistant reader healthcheck"
BROKER_UID=1883

say() { printf 'deploy-init: %s\n' "$*"; }
die() { printf 'deploy-init: %s\n' "$*" >&2; exit 1; }
trap 'rm -f "$env_file.new.$$" "$env_file.new.$$.2"' EXIT

# 32 letters and digits (190 bits): safe in an mqtt:// URL and in .env without quoting.
new_password() { LC_ALL=C tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32; }

# The value of KEY in the .env file (the last such line), or empty.
env_value() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }

check_password() {
  case "$2" in
    ""|*[!A-Za-z0-9._~-]*) die "$1: a password is letters, digits and . _ ~ - only (it goes into an mqtt:// URL)" ;;
  esac
}

mosquitto_image() {
  image=${MOSQUITTO_IMAGE:-}
  [ -n "$image" ] || [ ! -f "$env_file" ] || image=$(env_value MOSQUITTO_IMAGE)
  printf '%s' "${image:-eclipse-mosquitto:2}"
}

# Run a shell script inside the broker image as root (to give the file to the broker's
# uid), with the broker folder at /out and the .env's variables (and NEW_USER, NEW_PASSWORD)
# in its environment, not on a command line; no network.
in_broker_image() {
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info): start Docker first"
  image=$(mosquitto_image)
  docker image inspect "$image" >/dev/null 2>&1 || docker pull -q "$image" >/dev/null ||
    die "no broker image $image here and it cannot be pulled: set MOSQUITTO_IMAGE (deploy/local-base-images.sh builds one)"
  BROKER_UID=$BROKER_UID docker run --rm --network none --user 0:0 --entrypoint sh \
    --env-file "$env_file" -e BROKER_UID -e NEW_USER -e NEW_PASSWORD \
    -v "$broker_dir:/out" "$image" -c "$1"
}

write_env() {
  template=$here/env.example
  [ -f "$template" ] || die "$template is missing"
  tmp=$env_file.new.$$
  (umask 077 && : > "$tmp")
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      [A-Z]*=*)
        key=${line%%=*}
        value=${line#*=}
        override=$(printenv "$key" || true)
        [ -z "$override" ] || value=$override
        case "$key" in
          *_PASSWORD)
            [ -n "$value" ] || value=$(new_password)
            check_password "$key" "$value" ;;
        esac
        printf '%s=%s\n' "$key" "$value" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done < "$template" >> "$tmp"
  if [ "$dir" != "$here" ]; then
    # Compose resolves a relative folder against deploy/, not against DIR.
    sed "s|^MINERWATCH_BROKER_DIR=.*|MINERWATCH_BROKER_DIR=$broker_dir|" "$tmp" > "$tmp.2"
    cat "$tmp.2" > "$tmp" && rm -f "$tmp.2"
  fi
  mv -f "$tmp" "$env_file"
}

render_acl() {
  base=$(env_value MINERWATCH_BASE_TOPIC)
  prefix=$(env_value MINERWATCH_HA_PREFIX)
  sh "$here/render-acl.sh" --base "${base:-minerwatch}" --discovery "${prefix:-homeassistant}" \
    > "$broker_dir/acl.new" || { rm -f "$broker_dir/acl.new"; exit 1; }
  chmod 0644 "$broker_dir/acl.new"  # the broker (uid 1883) reads it
  mv -f "$broker_dir/acl.new" "$broker_dir/acl"
  say "rendered $broker_dir/acl for base topic '${base:-minerwatch}' and Home Assistant prefix '${prefix:-homeassistant}'"
}

write_passwd() {
  for account in $ACCOUNTS; do
    key=$(printf '%s' "$account" | tr a-z A-Z)_PASSWORD
    value=$(env_value "$key")
    [ -n "$value" ] || die "$key is missing in $env_file (an older one?): add it, or make deploy-init FORCE=1 for new passwords"
    check_password "$key in $env_file" "$value"
  done
  in_broker_image '
    set -eu
    rm -f /out/passwd.new
    create=-c
    for account in '"$ACCOUNTS"'; do
      key=$(printf "%s" "$account" | tr a-z A-Z)_PASSWORD
      eval "password=\${$key}"
      mosquitto_passwd $create -b /out/passwd.new "$account" "$password"
      create=
    done
    chown "$BROKER_UID:$BROKER_UID" /out/passwd.new
    chmod 0600 /out/passwd.new
    mv -f /out/passwd.new /out/passwd'
  say "wrote $broker_dir/passwd ($ACCOUNTS), owner uid $BROKER_UID, mode 0600, with $(mosquitto_image)"
}

add_user() {
  name=$1
  password=${2:-$(new_password)}
  case "$name" in
    ""|*[!A-Za-z0-9_-]*) die "user: NAME is letters, digits, _ or - (make deploy-user NAME=...)" ;;
  esac
  for account in $ACCOUNTS; do
    [ "$name" != "$account" ] || die "user: $name is a built-in account: its password is in $env_file (change it there, delete $broker_dir/passwd, run deploy-init)"
  done
  check_password "password" "$password"
  if [ ! -f "$env_file" ] || [ ! -f "$broker_dir/passwd" ]; then
    die "user: run make deploy-init first"
  fi
  (
  export NEW_USER="$name" NEW_PASSWORD="$password"
  in_broker_image '
    set -eu
    cp -p /out/passwd /out/passwd.new
    mosquitto_passwd -b /out/passwd.new "$NEW_USER" "$NEW_PASSWORD"
    chown "$BROKER_UID:$BROKER_UID" /out/passwd.new
    chmod 0600 /out/passwd.new
    mv -f /out/passwd.new /out/passwd'
  )
  say "account $name in $broker_dir/passwd, password: $password"
  say "it reads the base topic (the ACL's pattern line); for more, add a 'user $name' section to mosquitto/acl.template and run deploy-init"
  say "then: $(compose_command) restart mosquitto"
}

compose_command() {
  if [ "$dir" = "$here" ]; then
    printf 'docker compose -f deploy/compose.yaml'
  else
    printf 'docker compose --env-file %s -f deploy/compose.yaml' "$env_file"
  fi
}

mkdir -p "$broker_dir"
if [ "${1:-}" = user ]; then
  shift
  add_user "${1:-}" "${2:-}"
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument $1 (see --help)"

new_env=no
if [ -f "$env_file" ] && [ "$force" = no ]; then
  say "kept $env_file (--force, or make deploy-init FORCE=1, writes new passwords)"
else
  write_env
  new_env=yes
  say "wrote $env_file with generated passwords (mode 0600)"
fi
render_acl
if [ "$new_env" = yes ] || [ ! -f "$broker_dir/passwd" ]; then
  write_passwd
else
  say "kept $broker_dir/passwd (delete it to make it again from $env_file)"
fi
miners=$(env_value MINERWATCH_MINERS)
[ -n "$miners" ] || say "no miners yet: set MINERWATCH_MINERS in $env_file"
say "next: $(compose_command) up -d"
