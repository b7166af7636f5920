#!/usr/bin/env bash
# `make demo` and `make run`: the stack on one machine under honcho, a Procfile runner that
# stops every process when it gets SIGTERM or Ctrl-C (and when any one of them exits).
#   demo: a local broker when none answers, the simulated fleet, the four services.
#   run:  a local broker when none answers, the four services with your own config.
# Every MINERWATCH_* variable is honoured; the demo only fills in the ones you left unset.
set -euo pipefail
mode=${1:?usage: local-stack.sh demo|run}
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin"
mkdir -p .demo

if [ "$mode" = demo ]; then
  export MINERWATCH_DB_URL=${MINERWATCH_DB_URL:-sqlite:///.demo/minerwatch.db}
  export MINERWATCH_POLL_INTERVAL_S=${MINERWATCH_POLL_INTERVAL_S:-5}
  export MINERWATCH_DEMO_AXEOS=${MINERWATCH_DEMO_AXEOS:-3}
  export MINERWATCH_DEMO_CGMINER=${MINERWATCH_DEMO_CGMINER:-3}
  export MINERWATCH_DEMO_PORT=${MINERWATCH_DEMO_PORT:-14000}
  export MINERWATCH_DEMO_CONTROL_PORT=${MINERWATCH_DEMO_CONTROL_PORT:-14999}
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
      sed "s/^listener 1883 /listener $port /" mosquitto/dev.conf > .demo/mosquitto.conf
      processes=(broker "${processes[@]}")
      echo "starting a local broker on $host:$port (mosquitto/dev.conf)" ;;
    *)
      echo "no MQTT broker answers at $host:$port; the services will keep retrying" ;;
  esac
else
  echo "using the broker at $host:$port"
fi
[ "$mode" = demo ] && echo "dashboard: http://${MINERWATCH_API_LISTEN:-127.0.0.1:8000}/  (simulator control: http://127.0.0.1:$MINERWATCH_DEMO_CONTROL_PORT/miners)"
exec honcho start -f "$procfile" "${processes[@]}"
