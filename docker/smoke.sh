#!/usr/bin/env bash
# Build the distbp image and run it three ways on this machine, with a private Docker engine that
# this script starts and stops (root, Debian's docker.io, containerd and runc):
#   1. one rank:                   docker run IMAGE python -m distbp.train ...
#   2. two ranks in one container: docker run IMAGE mpiexec -n 2 python -m distbp.train ...
#   3. two containers as two nodes: one runs sshd on 127.0.0.1:$SSH_PORT, the other runs mpiexec
#      across both (Hydra over ssh, 2 ranks each: distbp.doctor, then training).
# Every container uses the host network and loopback only; the script creates no Docker network.
# With Docker Hub unreachable, set BASE to a local image, or leave it unset: the script then builds
# a Debian bookworm base with debootstrap (cached in BASE_TAR when that names a file).
#
#   docker/smoke.sh               # prints one line per stage and a summary; exit 0 when all pass
# Environment: BASE, BASE_TAR, MIRROR (Debian mirror for debootstrap), SSH_PORT (2222), STEPS (30).
# Not part of tests/run.sh: it takes minutes and ~2.5 GB of disk (the vfs storage driver copies
# every layer), all of it removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SSH_PORT=${SSH_PORT:-2222}
STEPS=${STEPS:-30}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/distbp-docker.XXXXXX")
NAME=distbp-smoke-$$
IMAGE=$NAME:latest
DOCKERD_PID=""
export DOCKER_HOST=unix://$WORK/docker.sock DOCKER_BUILDKIT=0
log() { echo "smoke: $*"; }

cleanup() {
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
  fi
  umount "$WORK/exec/netns/default" 2>/dev/null
  grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v dockerd >/dev/null || { echo "smoke: no dockerd: apt-get install docker.io containerd runc" >&2; exit 2; }
if (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null; then
  echo "smoke: 127.0.0.1:$SSH_PORT is in use; set SSH_PORT to a free port" >&2; exit 2
fi

# A private engine: its own socket, data and exec roots; no iptables rules, no bridge.
dockerd --host "$DOCKER_HOST" --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
  --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none > "$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null 2>&1 || { tail -5 "$WORK/dockerd.log" >&2; echo "smoke: dockerd did not start" >&2; exit 1; }

if [ -z "${BASE:-}" ]; then
  BASE=localbase:latest
  if [ -n "${BASE_TAR:-}" ] && [ -f "$BASE_TAR" ]; then
    log "base image from $BASE_TAR"
  else
    command -v debootstrap >/dev/null || { echo "smoke: set BASE, or apt-get install debootstrap" >&2; exit 2; }
    MIRROR=${MIRROR:-$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    log "building a Debian bookworm base with debootstrap from $MIRROR"
    t0=$(date +%s)
    rootfs=$WORK/rootfs
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      bookworm "$rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
      || { tail -5 "$WORK/debootstrap.log" >&2; exit 1; }
    # CA certificates this machine adds to Debian's bundle (pip reaches the package index through them)
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates > /dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    chroot "$rootfs" apt-get clean
    BASE_TAR=${BASE_TAR:-$WORK/base.tar}
    tar -C "$rootfs" -cf "$BASE_TAR" .
    rm -rf "$rootfs"
    log "base built in $(( $(date +%s) - t0 )) s"
  fi
  # LD_LIBRARY_PATH: Debian's python does not look in /usr/local/lib, where the mpich wheel puts libmpi
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LD_LIBRARY_PATH=/usr/local/lib' \
    "$BASE_TAR" "$BASE" > /dev/null
fi

t0=$(date +%s)
docker build --network host --build-arg BASE="$BASE" -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT" \
  > "$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log" >&2; echo "smoke: build FAILED" >&2; exit 1; }
build_s=$(( $(date +%s) - t0 ))
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "build: $build_s s, image $(( size / 1000000 )) MB (base $BASE)"
if docker run --rm --network host --entrypoint sh "$IMAGE" -c 'ls /root/.ssh/id_* /etc/ssh/ssh_host_* 2>/dev/null' | grep -q .; then
  echo "smoke: FAIL the image holds SSH keys" >&2; exit 1
fi

failed=0
run_stage() {  # NAME COMMAND...: run, time, keep the output, print one line
  local what=$1; shift
  local t0 out=$WORK/$what.log
  t0=$(date +%s)
  if "$@" > "$out" 2>&1; then
    log "$what: OK in $(( $(date +%s) - t0 )) s: $(grep -m1 'test accuracy' "$out" || tail -1 "$out")"
  else
    log "$what: FAILED (exit $?) after $(( $(date +%s) - t0 )) s; its last lines:"
    tail -15 "$out" | sed 's/^/    /'
    failed=1
  fi
}
TRAIN="python -m distbp.train --steps $STEPS --no-progress --checkpoint-dir /tmp/ck"

# shellcheck disable=SC2086
run_stage one-rank docker run --rm --network host "$IMAGE" $TRAIN
# shellcheck disable=SC2086
run_stage two-ranks-one-container docker run --rm --network host "$IMAGE" mpiexec -n 2 $TRAIN

# Two nodes: node b serves ssh on loopback; node a reaches it as "nodeb". Their keys come from a
# directory both mount (a deployment's volume), made by whichever starts first.
mkdir -p "$WORK/ssh"
docker run -d --name "$NAME-b" --network host -v "$WORK/ssh:/run/distbp-ssh" "$IMAGE" \
  /usr/sbin/sshd -D -e -p "$SSH_PORT" -o ListenAddress=127.0.0.1 > /dev/null
for _ in $(seq 60); do (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && break; sleep 0.5; done
# Loopback only: Hydra's control connections (-iface lo) and the ranks' traffic (libfabric's tcp
# provider on lo; MPICH's default UCX netmod would pick another interface).
NET="-iface lo -genv MPIR_CVAR_CH4_NETMOD ofi -genv FI_PROVIDER tcp -genv FI_TCP_IFACE lo"
run_stage two-containers docker run --rm --network host -v "$WORK/ssh:/run/distbp-ssh" "$IMAGE" sh -c "
  printf 'Host nodeb\n  HostName 127.0.0.1\n  Port $SSH_PORT\n' >> /root/.ssh/config &&
  mpiexec -hosts localhost:2,nodeb:2 -n 4 $NET python -m distbp.doctor &&
  mpiexec -hosts localhost:2,nodeb:2 -n 4 $NET $TRAIN"
grep -E '^(OK|FAIL|WARN)|rank\(s\)|^  rank' "$WORK/two-containers.log" | sed 's/^/    /' || true
[ "$failed" = 0 ] && log "all runs passed" || log "some runs FAILED"
exit "$failed"
