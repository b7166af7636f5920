#!/usr/bin/env bash
# `make compose-test` (not part of `make test`): the production stack of deploy/compose.yaml
# on a real Docker engine, with the simulated fleet as its miners (deploy/compose.sim.yaml),
# checked from outside as a person would, then removed (`down -v`):
#   - the build context holds no secret, virtualenv or database; uv's version agrees with
#     the Makefile's UV_VERSION
#   - deploy/init.sh in a temporary folder (your deploy/.env is neither read nor touched),
#     with base topic `mwtest` and HA prefix `hatest`: the rendered ACL must follow them
#   - the images build; every container becomes healthy (or running: the simulator)
#   - GET /healthz on the published port: status ok, every service online
#   - every simulated miner has stored samples (GET /api/miners/{id}/samples)
#   - control (on in this stack): an operator token identifies a simulated Bitaxe through
#     the api, the broker's ACL and the collector, and the store audits it; a viewer is
#     refused (403)
#   - the broker refuses an anonymous client and a wrong password, lets `reader` read the
#     base topic and `homeassistant` the collector's discovery configs
#   - no container runs as root
# Timings are printed at the end.
#   deploy/compose-test.sh [--keep]   --keep: leave the stack up (prints how to remove it)
#
# Where no image registry answers (the base images cannot be pulled), build local stand-ins
# from a Debian mirror and point the builds at them:
#   deploy/local-base-images.sh
#   PYTHON_IMAGE=minerwatch-local/python:3.11 MOSQUITTO_IMAGE=minerwatch-local/mosquitto:2 \
#     make compose-test
# MINERWATCH_BUILD_NETWORK=host when the builds cannot reach PyPI over Docker's bridge.
#
# A Docker engine on Debian 12 without one (as root): Debian's engine, and Compose v2 (Debian
# 12's docker-compose package is v1; Docker's docker-compose-plugin is v2, and so is Debian
# 13's docker-compose 2.x package, whose usr/libexec/docker/cli-plugins/docker-compose
# (`dpkg -x`) runs on Debian 12 from /usr/local/lib/docker/cli-plugins/):
#   apt-get install docker.io && (dockerd > /var/log/dockerd.log 2>&1 &)
# In a VM without systemd that is all it took here (overlay2, iptables and the bridge as
# they come): the builds reach PyPI over the bridge. Where iptables is not allowed:
# `dockerd --iptables=false` and MINERWATCH_BUILD_NETWORK=host (no NAT for the bridge).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=no
case "${1:-}" in
  --keep) keep=yes ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "compose-test: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
PROJECT=minerwatch-compose-test
started=$SECONDS
timings=()
phase_start=$SECONDS
phase() {  # end the current phase, named $1
  timings+=("$1 $((SECONDS - phase_start)) s")
  phase_start=$SECONDS
}
say() { printf 'compose-test: %s\n' "$*"; }
fail() { printf 'compose-test: FAILED: %s\n' "$*" >&2; exit 1; }

if ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers ('docker info' failed), so nothing was tested."
  say "start one (see deploy/compose-test.sh --help), then run make compose-test again"
  exit 1
fi
docker compose version >/dev/null 2>&1 ||
  { say "'docker compose' (Compose v2) is missing: see deploy/compose-test.sh --help"; exit 1; }

# uv inside the images is the Makefile's uv.
uv_version=$(sed -n 's/^UV_VERSION := *//p' Makefile)
grep -qx "ARG UV_VERSION=$uv_version" deploy/Dockerfile ||
  fail "deploy/Dockerfile does not build with uv $uv_version (the Makefile's UV_VERSION)"

# The build context as Docker sees it (.dockerignore applied): only the workspace's files.
python_image=${PYTHON_IMAGE:-python:3.12-slim}
context_listing=$(docker build -q -f - . <<EOF 2>/dev/null | tail -n 1
FROM $python_image
COPY . /context
RUN cd /context && find . -mindepth 1 | sort > /listing
EOF
) || fail "could not build from $python_image to list the build context (no registry? see --help)"
listing=$(docker run --rm "$context_listing" cat /listing)
docker rmi "$context_listing" >/dev/null
unexpected=$(printf '%s\n' "$listing" | grep -vE '^\./(pyproject\.toml|uv\.lock|shared|services|sim)(/|$)' || true)
[ -z "$unexpected" ] || fail "the build context holds more than the workspace: $(printf '%s' "$unexpected" | tr '\n' ' ' | head -c 300)"
leaked=$(printf '%s\n' "$listing" | grep -E '(^|/)(\.env[^/]*|passwd|\.venv|\.tools|\.demo|data|tests|__pycache__)(/|$)|\.db(-wal|-shm)?$' || true)
[ -z "$leaked" ] || fail ".dockerignore lets these into the build context: $(printf '%s' "$leaked" | tr '\n' ' ' | head -c 300)"
say "build context: $(printf '%s\n' "$listing" | wc -l) paths, none of them secrets, venvs or data"
phase "checks"

work=$(mktemp -d)
compose_files=(-f deploy/compose.yaml -f deploy/compose.sim.yaml)
compose() { docker compose -p "$PROJECT" --env-file "$work/.env" "${compose_files[@]}" "$@"; }
finish() {
  status=$?
  if [ "$status" != 0 ] && [ -f "$work/.env" ] && [ -n "$(compose ps -a -q 2>/dev/null)" ]; then
    compose ps -a 2>/dev/null || true
    compose logs --no-color --tail 25 2>/dev/null || true
  fi
  if [ "$keep" = yes ] && [ "$status" = 0 ]; then
    say "left running; remove with: docker compose -p $PROJECT --env-file $work/.env ${compose_files[*]} down -v && rm -rf $work"
  else
    [ ! -f "$work/.env" ] || compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap finish EXIT

# A test stack of its own: topics that differ from the defaults (the ACL must follow them),
# ports the engine picks on 127.0.0.1, a 2 s poll.
MINERWATCH_BASE_TOPIC=mwtest MINERWATCH_HA_PREFIX=hatest MINERWATCH_CONTROL_ENABLED=true \
  MINERWATCH_API_PUBLISH=127.0.0.1: MINERWATCH_MQTT_PUBLISH=127.0.0.1: \
  MINERWATCH_POLL_INTERVAL_S=2 MINERWATCH_MINERS='' \
  sh deploy/init.sh --dir "$work" | sed 's/^/  /' || fail "deploy/init.sh failed"
# From here on Compose reads the test's .env only: none of its variables from this shell.
for key in $(sed -n 's/^\([A-Z][A-Z0-9_]*\)=.*/\1/p' deploy/env.example); do unset "$key"; done
compose down -v --remove-orphans >/dev/null 2>&1 || true  # a stack left by --keep
phase "init"

say "building the images (log: $work/build.log) ..."
if ! compose build > "$work/build.log" 2>&1; then
  tail -n 30 "$work/build.log" >&2
  fail "the build failed (a base image that cannot be pulled? see --help)"
fi
phase "build"

compose up -d > "$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "docker compose up -d failed"; }
phase "up -d"

# Every container healthy, or running where it has no healthcheck (the simulator).
deadline=$((SECONDS + 180))
while :; do
  waiting=()
  for id in $(compose ps -a -q); do
    read -r name state health < <(docker inspect -f \
      '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
    if [ "$state" != running ] || { [ "$health" != healthy ] && [ "$health" != none ]; }; then
      waiting+=("${name#/}:$state/$health")
    fi
  done
  [ ${#waiting[@]} -gt 0 ] || break
  [ $SECONDS -lt $deadline ] || fail "not healthy after 180 s: ${waiting[*]}"
  sleep 2
done
say "every container is healthy: $(compose ps --format '{{.Service}}' | sort | tr '\n' ' ')"
phase "healthy"

api=$(compose port api 8000)
# Reads need a token (auth = "token", the production default): one made the documented way.
make_token() {  # role name: the token, the last line minerwatch-api prints
  compose exec -T api minerwatch-api token create --role "$1" --name "$2" | tail -n 1
}
token=$(make_token viewer compose-test) || fail "minerwatch-api token create failed: $token"
operator=$(make_token operator compose-test-operator) ||
  fail "minerwatch-api token create --role operator failed: $operator"
# The checks over HTTP, from this host through the published port; each retries for 60 s.
"$PYTHON" - "http://$api" "$token" "$operator" <<'PY'
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

base, token, operator = sys.argv[1], sys.argv[2], sys.argv[3]


def get(path: str, method: str = "GET", bearer: str = token,
        timeout: float = 5) -> tuple[int, object]:
    request = urllib.request.Request(base + path, method=method,
                                     headers={"Authorization": f"Bearer {bearer}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def until(what: str, check) -> Any:
    """check() until it says (True, value): the value; else (False, why) for 60 s."""
    deadline = time.monotonic() + 60
    while True:
        result = check()
        if result[0]:
            return result[1]
        if time.monotonic() > deadline:
            sys.exit(f"compose-test: FAILED: {what}: {result[1]}")
        time.sleep(1)


def healthy() -> tuple[bool, object]:
    status, body = get("/healthz")
    ok = status == 200 and isinstance(body, dict) and body.get("status") == "ok" and all(
        service.get("state") == "online" for service in body.get("services", {}).values())
    return ok, body if ok else (status, body)


health = until("GET /healthz is not ok with every service online", healthy)
services = ", ".join(f"{name} {s['state']}" for name, s in health["services"].items())
print(f"compose-test: GET /healthz: {health['status']}, broker {health['broker']}, "
      f"database {health['database']}; {services}")


def stored() -> tuple[bool, object]:
    status, miners = get("/api/miners")
    if status != 200 or not isinstance(miners, list) or len(miners) < 6:
        return False, f"GET /api/miners: {status} {str(miners)[:200]}"
    rows = {}
    for miner in miners:
        status, samples = get(f"/api/miners/{miner['miner_id']}/samples?limit=5")
        rows[miner["miner_id"]] = len(samples) if status == 200 and isinstance(samples, list) else 0
    return all(rows.values()), rows


rows = until("not every simulated miner has stored samples", stored)
print(f"compose-test: stored samples of {len(rows)} miners: "
      + ", ".join(f"{miner} {count}" for miner, count in rows.items()))

# Control, end to end through the images: api -> broker (ACL) -> collector -> miner.
_, miners = get("/api/miners")
bitaxe = next((m["miner_id"] for m in miners if (m["info"] or {}).get("driver") == "axeos"),
              None) if isinstance(miners, list) else None
if bitaxe is None:
    sys.exit(f"compose-test: FAILED: no simulated Bitaxe in GET /api/miners: {str(miners)[:200]}")
identify = f"/api/miners/{bitaxe}/actions/identify"
status, body = get(identify, "POST")
if status != 403:
    sys.exit(f"compose-test: FAILED: a viewer's identify: expected 403, got {status} {body}")
status, body = get(identify, "POST", bearer=operator, timeout=60)
if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
    sys.exit(f"compose-test: FAILED: an operator's identify of {bitaxe}: {status} {body}")


def audited() -> tuple[bool, object]:
    status, events = get(f"/api/miners/{bitaxe}/events?type=command")
    found = [e for e in events if e.get("id") == body["id"]] if status == 200 else []
    return bool(found), found or (status, events)


event = until("the identify is not in the miner's events", audited)[0]
print(f"compose-test: an operator identified {bitaxe}: {body['status']}, audited as "
      f"{event['action']} by {event['by']} ({event['status']}); a viewer got 403")
PY

# MQTT, inside the broker's container with its own client.
mqtt_sub() { compose exec -T mosquitto mosquitto_sub -h 127.0.0.1 -p 1883 "$@" 2>&1; }
if out=$(mqtt_sub -t '#' -C 1 -W 5); then fail "an anonymous client was let in: $out"; fi
case "$out" in *"not authori"*) ;; *) fail "an anonymous client: expected 'not authorised', got: $out" ;; esac
say "an anonymous client is refused: $out"
if out=$(mqtt_sub -u reader -P wrong-password -t '#' -C 1 -W 5); then fail "a wrong password was let in"; fi
case "$out" in *"not authori"*) ;; *) fail "a wrong password: expected 'not authorised', got: $out" ;; esac
reader_password=$(sed -n 's/^READER_PASSWORD=//p' "$work/.env")
out=$(mqtt_sub -u reader -P "$reader_password" -t 'mwtest/services/+/status' -C 1 -W 10 -v) ||
  fail "reader cannot read mwtest/services/+/status: $out"
say "reader reads the base topic: ${out:0:100}"
# The collector's Home Assistant discovery configs, under the test's prefix and base topic:
# the ACL let the collector publish them and lets homeassistant read them.
ha_password=$(sed -n 's/^HOMEASSISTANT_PASSWORD=//p' "$work/.env")
out=$(mqtt_sub -u homeassistant -P "$ha_password" -t 'hatest/+/mwtest/#' -C 1 -W 10 -v) ||
  fail "homeassistant reads no discovery config under hatest/+/mwtest/#: $out"
say "homeassistant reads discovery configs: ${out%% *}"

for service in $(compose ps --format '{{.Service}}'); do
  uid=$(compose exec -T "$service" id -u)
  [ "$uid" != 0 ] || fail "$service runs as root"
  users+="$service $uid, "
done
say "uids: ${users%, }"
phase "checks"

if [ "$keep" = no ]; then
  compose down -v --remove-orphans >/dev/null 2>&1
  phase "down -v"
fi
joined=$(printf '%s, ' "${timings[@]}")
say "passed in $((SECONDS - started)) s (${joined%, })"
