#!/usr/bin/env bash
# `make demo` and `make run`: the stack on one machine under honcho, a Procfile runner that
# stops every process when it gets SIGTERM or Ctrl-C (and when any one of them exits).
#   demo: a local broker when none answers, the simulated fleet, the four services.
#   run:  a local broker when none answers, the four services with your own config.
# Every MINERWATCH_* variable is honoured; the demo only fills in the ones you left unset.
#   broker-conf PORT DIR: only write DIR/mosquitto.conf (and DIR/broker/), as demo and run do.
set -euo pipefail
mode=${1:?usage: local-stack.sh demo|run|broker-conf PORT DIR}
if [ "$mode" = broker-conf ]; then
  conf_port=${2:?usage: local-stack.sh broker-conf PORT DIR}
  conf_dir=$(realpath -m "${3:?usage: local-stack.sh broker-conf PORT DIR}")
fi
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin"

# The local broker's config in DIR/mosquitto.conf: mosquitto/dev.conf with PORT and its
# persistence (retained messages, the store's queued session) in DIR/broker/. Started as
# root, mosquitto drops to the user `mosquitto` and could not write DIR itself ("Error:
# Permission denied." at every autosave, nothing kept): that folder is given to it. Where
# that user cannot reach it at all (a parent folder only root may enter), the broker
# stays root (`user root`) rather than lose its state. Run as anyone else, mosquitto
# keeps that user and needs nothing.
broker_conf() {
  local port=$1 dir=$2 data="$2/broker" user=""
  mkdir -p "$data"
  # where an earlier version kept it, so an upgrade keeps the broker's state
  if [ -f "$dir/mosquitto.db" ] && [ ! -e "$data/mosquitto.db" ]; then
    mv "$dir/mosquitto.db" "$data/mosquitto.db"
  fi
  if [ "$(id -u)" = 0 ]; then
    if id -u mosquitto >/dev/null 2>&1 && chown -R mosquitto: "$data" &&
        runuser -u mosquitto -- test -w "$data" 2>/dev/null; then
      user=mosquitto
    else
      user=root
    fi
  fi
  {
    sed -e "s/^listener 1883 /listener $port /" \
        -e "s|^persistence_location .*|persistence_location $data/|" mosquitto/dev.conf
    if [ -n "$user" ]; then
      printf '\n# started as root: the user the broker runs as (local-stack.sh)\nuser %s\n' "$user"
    fi
  } > "$dir/mosquitto.conf"
}

if [ "$mode" = broker-conf ]; then
  broker_conf "$conf_port" "$conf_dir"
  exit 0
fi
mkdir -p .demo

if [ "$mode" = demo ]; then
  export MINERWATCH_DB_URL=${MINERWATCH_DB_URL:-sqlite:///.demo/minerwatch.db}
  export MINERWATCH_POLL_INTERVAL_S=${MINERWATCH_POLL_INTERVAL_S:-5}
  export MINERWATCH_DEMO_AXEOS=${MINERWATCH_DEMO_AXEOS:-3}
  export MINERWATCH_DEMO_CGMINER=${MINERWATCH_DEMO_CGMINER:-3}
  export MINERWATCH_DEMO_PORT=${MINERWATCH_DEMO_PORT:-14000}
  export MINERWATCH_DEMO_CONTROL_PORT=${MINERWATCH_DEMO_CONTROL_PORT:-14999}
  # The demo's miners are simulated: control is on and reads are open to this machine
  # (writes still need a token, made below). Never the defaults of `make run`.
  export MINERWATCH_API_AUTH=${MINERWATCH_API_AUTH:-lan}
  export MINERWATCH_CONTROL_ENABLED=${MINERWATCH_CONTROL_ENABLED:-true}
  MINERWATCH_MINERS=$(minerwatch-sim --print-urls --axeos "$MINERWATCH_DEMO_AXEOS" \
    --cgminer "$MINERWATCH_DEMO_CGMINER" --base-port "$MINERWATCH_DEMO_PORT")
  export MINERWATCH_MINERS
  procfile=Procfile.demo
  processes=(sim collector store alerts api)
else
  procfile=Procfile
  processes=(collector store alerts api)
fi

# Is a broker answering at MINERWATCH_MQTT_URL? If not and it is this machine, start one.
read -r host port answers < <(python - <<'PY'
import os, socket
from minerwatch.shared.config import parse_mqtt_url
address = parse_mqtt_url(os.environ.get("MINERWATCH_MQTT_URL", "mqtt://127.0.0.1:1883"))
try:
    socket.create_connection((address.host, address.port), timeout=1).close()
    answers = "yes"
except OSError:
    answers = "no"
print(address.host, address.port, answers)
PY
)
if [ "$answers" = no ]; then
  case "$host" in
    127.*|localhost|::1)
      command -v mosquitto >/dev/null || { echo "mosquitto is not installed: run 'make setup'"; exit 1; }
      broker_conf "$port" "$PWD/.demo"
      processes=(broker "${processes[@]}")
      echo "starting a local broker on $host:$port (mosquitto/dev.conf)" ;;
    *)
      echo "no MQTT broker answers at $host:$port; the services will keep retrying" ;;
  esac
else
  echo "using the broker at $host:$port"
fi
if [ "$mode" = demo ]; then
  # An admin token for the dashboard's sign-in, made once and kept in .demo/token (0600);
  # made again when the demo's database no longer has it.
  if [ ! -s .demo/token ] || ! minerwatch-api token list 2>/dev/null | grep -q '^demo '; then
    minerwatch-api token revoke demo >/dev/null 2>&1 || true
    (umask 077 && minerwatch-api token create --role admin --name demo | tail -n 1 > .demo/token) ||
      { echo "could not make the demo's token"; exit 1; }
  fi
  echo "dashboard: http://${MINERWATCH_API_LISTEN:-127.0.0.1:8000}/  (simulator control: http://127.0.0.1:$MINERWATCH_DEMO_CONTROL_PORT/miners)"
  echo "sign in (restart, settings, autotune) with the demo's admin token: $(cat .demo/token)"
fi
exec honcho start -f "$procfile" "${processes[@]}"
