#!/usr/bin/env bash
# A cluster of N "hosts" on this machine, for tests: each host is a Linux network namespace with its
# own hostname and an address on a private subnet that exists only inside the namespaces (a bridge in
# a switch namespace joins them, so nothing is added to the machine's own network). Hydra starts the
# remote ranks through a launcher script in place of ssh, so ranks on different hosts talk over real
# TCP, as between machines. Needs root and `ip`.
#
#   launch/netns-cluster.sh up NAME HOSTS              # hosts NAME-h0 .. NAME-h<HOSTS-1>
#   launch/netns-cluster.sh run NAME [-ppn P] [-n N] [-hosts K] [--] COMMAND...
#                                                      # mpiexec, from host 0, of COMMAND on N ranks,
#                                                      # P per host (default 1), over the first K hosts
#   launch/netns-cluster.sh launch NAME [distbp.launch flags] -- [distbp.train flags]
#                                                      # python -m distbp.launch from host 0 over
#                                                      # every host (restarts on the hosts alive)
#   launch/netns-cluster.sh exec NAME HOST COMMAND...  # one command on one host (0-based index)
#   launch/netns-cluster.sh kill NAME HOST             # a lost machine: kill every process on it,
#                                                      # and the launcher no longer reaches it
#   launch/netns-cluster.sh revive NAME HOST           # the launcher reaches that host again
#   launch/netns-cluster.sh down NAME                  # remove everything `up` made
#
# e.g.  launch/netns-cluster.sh up demo 2
#       launch/netns-cluster.sh run demo -ppn 2 -- python -m distbp.doctor
#       launch/netns-cluster.sh down demo
# NAME: letters, digits and dashes, at most 8 characters (interface names are short); pick a unique
# one per run so that concurrent clusters on one machine never share a name. PYTHON picks the
# interpreter (its mpiexec is used); extra mpiexec flags go in MPIEXEC_FLAGS.
set -euo pipefail

usage() { sed -n '8,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "netns-cluster: $*" >&2; exit "${2:-1}"; }

state_dir() { echo "${TMPDIR:-/tmp}/netns-cluster-$1"; }
host_ns() { echo "$1-h$2"; }

check_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,7}$ ]] || die "bad cluster name '$1': use 1-8 letters, digits or dashes" 2
}

cmd_up() {
  local name=$1 hosts=$2
  check_name "$name"
  [[ "$hosts" =~ ^[1-9][0-9]?$ ]] && [ "$hosts" -le 50 ] || die "bad host count '$hosts': use 1-50" 2
  [ "$(id -u)" = 0 ] || die "needs root (to create network namespaces)"
  command -v ip >/dev/null || die "needs the 'ip' command (iproute2)"
  local dir; dir=$(state_dir "$name")
  [ -e "$dir" ] && die "cluster '$name' exists already ($dir); run: $0 down $name"
  mkdir -p "$dir"
  trap 'cmd_down "$name"' ERR  # a half-made cluster is removed again
  # A subnet per cluster (10.X.Y.0/24 from the name): it exists only inside these namespaces anyway.
  local sum; sum=$(printf '%s' "$name" | cksum | cut -d' ' -f1)
  local net="10.$(( 100 + sum % 100 )).$(( (sum / 100) % 250 + 1 ))"
  echo "$hosts" > "$dir/hosts"
  echo "$net" > "$dir/net"
  local sw; sw="$name-sw"
  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  local k ns hostsfile="$dir/etc-hosts"
  printf '127.0.0.1 localhost\n' > "$hostsfile"
  for ((k = 0; k < hosts; k++)); do
    printf '%s.%d %s\n' "$net" $((k + 1)) "$(host_ns "$name" "$k")" >> "$hostsfile"
    host_ns "$name" "$k" >> "$dir/hostfile"
  done
  for ((k = 0; k < hosts; k++)); do
    ns=$(host_ns "$name" "$k")
    ip netns add "$ns"
    # the veth pair is made inside the switch namespace, one end moved straight into the host's
    ip -n "$sw" link add "p$k" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "p$k" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$net.$((k + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    # `ip netns exec NS` mounts /etc/netns/NS/* over /etc: every host resolves every host's name
    mkdir -p "/etc/netns/$ns"
    cp "$hostsfile" "/etc/netns/$ns/hosts"
  done
  # Hydra's launcher (in place of ssh): called as `launcher [-x] HOST COMMAND`, it runs COMMAND on
  # HOST's namespace under HOST's own hostname.
  cat > "$dir/launcher" <<EOF
#!/bin/sh
[ "\$1" = -x ] && shift
host=\$1; shift
if [ -e "$dir/lost-\$host" ]; then  # \`kill\` took this host off the network
  echo "ssh: connect to host \$host port 22: No route to host" >&2; exit 255
fi
# Not exec'd: this shell stays behind on the launching host, as ssh does, to say when the host is lost.
ip netns exec "\$host" unshare --uts sh -c 'hostname "\$0"; eval "\$1"' "\$host" "\$*"
status=\$?
[ \$status -gt 128 ] && echo "netns-cluster: lost host \$host: its processes ended by signal \$((status - 128))" >&2
exit \$status
EOF
  chmod +x "$dir/launcher"
  trap - ERR
}

need_cluster() {
  check_name "$1"
  [ -f "$(state_dir "$1")/hosts" ] || die "no cluster '$1' here; start one with: $0 up $1 HOSTS"
}

cmd_run() {
  local name=$1; shift
  need_cluster "$name"
  local dir hosts ppn=1 ranks="" use=""
  dir=$(state_dir "$name")
  hosts=$(cat "$dir/hosts")
  while [ $# -gt 0 ]; do
    case "$1" in
      -ppn) ppn=$2; shift 2 ;;
      -n) ranks=$2; shift 2 ;;
      -hosts) use=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  [ $# -gt 0 ] || die "run: no command given" 2
  [[ "$ppn" =~ ^[1-9][0-9]*$ ]] || die "run: -ppn $ppn: use a positive number of ranks per host" 2
  use=${use:-$hosts}
  [[ "$use" =~ ^[0-9]+$ ]] && [ "$use" -ge 1 ] && [ "$use" -le "$hosts" ] \
    || die "run: -hosts $use: the cluster has $hosts host(s)" 2
  ranks=${ranks:-$((use * ppn))}
  local k list=""
  for ((k = 0; k < use; k++)); do list+="${list:+,}$(host_ns "$name" "$k"):$ppn"; done
  local py=${PYTHON:-python3} mpiexec
  mpiexec=${MPIEXEC:-$(dirname "$(command -v "$py")")/mpiexec}
  local first; first=$(host_ns "$name" 0)
  # UCX_TLS: without it UCX sees one machine and would move every byte through shared memory.
  # shellcheck disable=SC2086
  ip netns exec "$first" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$first" \
    "$mpiexec" -launcher ssh -launcher-exec "$dir/launcher" -hosts "$list" -n "$ranks" \
    -genv UCX_TLS tcp,self -genv FI_PROVIDER tcp ${MPIEXEC_FLAGS:-} "$@"
}

cmd_launch() {
  local name=$1; shift
  need_cluster "$name"
  local dir first py=${PYTHON:-python3}
  dir=$(state_dir "$name")
  first=$(host_ns "$name" 0)
  # The ranks inherit mpiexec's environment, UCX_TLS included (see cmd_run).
  ip netns exec "$first" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$first" \
    env UCX_TLS=tcp,self FI_PROVIDER=tcp "$py" -m distbp.launch --hostfile "$dir/hostfile" \
    --launcher-exec "$dir/launcher" "$@"
}

cmd_exec() {
  local name=$1 k=$2; shift 2
  need_cluster "$name"
  local ns; ns=$(host_ns "$name" "$k")
  exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$ns" "$@"
}

cmd_kill() {
  local name=$1 k=$2
  need_cluster "$name"
  local ns; ns=$(host_ns "$name" "$k")
  touch "$(state_dir "$name")/lost-$ns"
  ip netns pids "$ns" | xargs -r kill -9
}

cmd_revive() {
  need_cluster "$1"
  rm -f "$(state_dir "$1")/lost-$(host_ns "$1" "$2")"
}

cmd_down() {
  local name=$1
  check_name "$name"
  local ns
  # every namespace of this cluster, also when `up` stopped half way or the state folder is gone
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$name-(h[0-9]+|sw)\$" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$(state_dir "$name")"
}

[ $# -ge 2 ] || usage
case "$1" in
  up) [ $# -eq 3 ] || usage; cmd_up "$2" "$3" ;;
  run) shift; cmd_run "$@" ;;
  launch) shift; cmd_launch "$@" ;;
  exec) [ $# -ge 4 ] || usage; shift; cmd_exec "$@" ;;
  kill) [ $# -eq 3 ] || usage; cmd_kill "$2" "$3" ;;
  revive) [ $# -eq 3 ] || usage; cmd_revive "$2" "$3" ;;
  down) [ $# -eq 2 ] || usage; cmd_down "$2" ;;
  *) usage ;;
esac
