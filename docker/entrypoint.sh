#!/bin/sh
# Start-up of every distbp container: per-container SSH host keys, and the deployment's SSH key pair
# from the volume at $DISTBP_SSH_DIR (default /run/distbp-ssh), made there by the first container
# that finds none. Then runs the command. Without that volume (a single container) ssh is not set up.
set -eu
dir=${DISTBP_SSH_DIR:-/run/distbp-ssh}
if [ -d "$dir" ]; then
  [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
  if [ ! -f "$dir/keys/id_ed25519" ]; then
    # Two containers may start at once: each makes a pair aside; the first rename wins (a rename
    # onto a directory that is not empty fails), the loser drops its own.
    tmp=$(mktemp -d "$dir/.new.XXXXXX")
    ssh-keygen -q -t ed25519 -N "" -C "distbp deployment key" -f "$tmp/id_ed25519"
    mv -T "$tmp" "$dir/keys" 2>/dev/null || rm -rf "$tmp"
  fi
  install -m 600 "$dir/keys/id_ed25519" /root/.ssh/id_ed25519
  install -m 644 "$dir/keys/id_ed25519.pub" /root/.ssh/id_ed25519.pub
  install -m 600 "$dir/keys/id_ed25519.pub" /root/.ssh/authorized_keys
fi
exec "$@"
