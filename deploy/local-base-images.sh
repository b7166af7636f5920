#!/usr/bin/env bash
# Local stand-ins for the two base images of deploy/compose.yaml, for a machine whose Docker
# engine reaches no image registry (Docker Hub) but does reach a Debian mirror:
#   minerwatch-local/python:3.11    Debian bookworm + python3 (3.11) + python3-venv, for
#                                   PYTHON_IMAGE (deploy/Dockerfile needs python3 with
#                                   venv and pip, as python:3.12-slim has)
#   minerwatch-local/mosquitto:2    Debian bookworm + mosquitto + mosquitto-clients laid out
#                                   like eclipse-mosquitto: user mosquitto is uid/gid 1883,
#                                   /mosquitto/{config,data,log}, mosquitto_passwd/_sub on PATH
# built from one `debootstrap --variant=minbase bookworm` (needs root and debootstrap:
# `apt-get install debootstrap`). Then point the builds at them:
#   PYTHON_IMAGE=minerwatch-local/python:3.11 MOSQUITTO_IMAGE=minerwatch-local/mosquitto:2 \
#     make compose-test        (or deploy-init / docker compose ... up, with the same two)
# The CA certificates added on this host (/usr/local/share/ca-certificates/*.crt, such as a
# TLS-intercepting proxy's) are added to the images too, and pip and uv are pointed at the
# system bundle, so PyPI answers inside `docker build` as it does on the host.
#   --rebuild      build again even if the images exist
#   --no-host-ca   leave the host's added CA certificates out
#   --mirror URL   the Debian mirror (default: debootstrap's)
# MINERWATCH_BUILD_NETWORK=host builds on the host's network (as the compose builds can).
set -euo pipefail
mirror=""
rebuild=no
host_ca=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=yes; shift ;;
    --no-host-ca) host_ca=no; shift ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "local-base-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

DEBIAN_IMAGE=minerwatch-local/debian:bookworm
PYTHON_IMAGE=minerwatch-local/python:3.11
MOSQUITTO_IMAGE=minerwatch-local/mosquitto:2

docker info >/dev/null 2>&1 || { echo "local-base-images.sh: no Docker engine answers (docker info)" >&2; exit 1; }
have() { docker image inspect "$1" >/dev/null 2>&1; }
started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$rebuild" = yes ] || ! have "$DEBIAN_IMAGE"; then
  [ "$(id -u)" = 0 ] || { echo "local-base-images.sh: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "local-base-images.sh: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  echo "debootstrap bookworm ${mirror:+from $mirror }..."
  # The rootfs keeps that mirror in /etc/apt/sources.list for the apt-get below.
  debootstrap --variant=minbase bookworm "$work/rootfs" ${mirror:+"$mirror"} \
    > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # What a container never needs: the package cache and lists, docs, man pages.
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/*
  tar -C "$work/rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$work/rootfs"
  echo "built $DEBIAN_IMAGE"
fi

# The build context: the host's added CA certificates (or none).
mkdir -p "$work/ctx/ca"
if [ "$host_ca" = yes ]; then
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && cp "$crt" "$work/ctx/ca/" && echo "adding the host's CA certificate $(basename "$crt")"
  done
fi

# Packages come over plain HTTP from the mirror (apt checks their signatures), through
# Docker's bridge, or the host's network with MINERWATCH_BUILD_NETWORK=host (where the
# bridge has no way out: dockerd --iptables=false).
build() {
  local image=$1
  docker build --quiet --network "${MINERWATCH_BUILD_NETWORK:-default}" -t "$image" -f - \
    "$work/ctx" >/dev/null
  echo "built $image"
}

if [ "$rebuild" = yes ] || ! have "$PYTHON_IMAGE"; then
  build "$PYTHON_IMAGE" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      python3 python3-venv ca-certificates >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
# pip (certifi) and uv (webpki roots) bring their own CA lists: use the system's instead.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
fi

if [ "$rebuild" = yes ] || ! have "$MOSQUITTO_IMAGE"; then
  # Debian's package makes a system user `mosquitto`; eclipse-mosquitto's is uid/gid 1883,
  # which deploy/init.sh gives the password file to and compose runs the broker as.
  build "$MOSQUITTO_IMAGE" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      mosquitto mosquitto-clients >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \\
 && groupmod -g 1883 mosquitto && usermod -u 1883 -g 1883 mosquitto \\
 && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \\
 && printf 'listener 1883\nallow_anonymous false\npersistence true\npersistence_location /mosquitto/data/\nlog_dest stdout\n' \\
      > /mosquitto/config/mosquitto.conf \\
 && chown -R 1883:1883 /mosquitto /var/lib/mosquitto /var/log/mosquitto
VOLUME ["/mosquitto/data", "/mosquitto/log"]
EXPOSE 1883
# Debian's mosquitto 2.0.11 does not flush its stdout log: line-buffer it for docker logs.
CMD ["stdbuf", "-oL", "/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
EOF
fi

echo "done in $((SECONDS - started)) s. Use them with:"
echo "  PYTHON_IMAGE=$PYTHON_IMAGE MOSQUITTO_IMAGE=$MOSQUITTO_IMAGE"
