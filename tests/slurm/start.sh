#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the Slurm integration tests, by hand
# (CI machines have no systemd): installs the Debian packages if missing, makes a munge key,
# starts munged, slurmctld and slurmd with tests/slurm/slurm.conf, and waits until the node
# is idle. Idempotent: daemons already running are left alone.
#
# Prints the line `export SLURM_CONF=...` on its last line of stdout; Slurm's client
# commands (sbatch, squeue, scancel) need it to find this cluster.
#
# Environment: CBOUND_SLURM_DIR (default /tmp/cbound-slurm) holds the rendered config, state,
# spool and logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${CBOUND_SLURM_DIR:-/tmp/cbound-slurm}"
log() { echo "slurm-test-cluster: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (the daemons run as root in this test setup)"
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
fi

mkdir -p "$dir/state" "$dir/spool"
sed "s|@DIR@|$dir|g" "$here/slurm.conf" > "$dir/slurm.conf.new"
if ! cmp -s "$dir/slurm.conf.new" "$dir/slurm.conf" 2>/dev/null; then
    mv "$dir/slurm.conf.new" "$dir/slurm.conf"
else
    rm -f "$dir/slurm.conf.new"
fi
export SLURM_CONF="$dir/slurm.conf"

# munge: one key shared by the daemons and the clients (all on this machine).
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running "$dir/slurmctld.pid"; then
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$SLURM_CONF"
fi
if ! running "$dir/slurmd.pid"; then
    log "starting slurmd"
    /usr/sbin/slurmd -f "$SLURM_CONF" -N localhost
fi

for _ in $(seq 120); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mixed|allocated) break ;;
        down*|drain*|fail*)
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)"
case "$state" in
    idle|mixed|allocated) log "node localhost is $state" ;;
    *)
        log "node did not come up (state: '${state:-none}'); logs in $dir"
        tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        exit 1 ;;
esac
echo "export SLURM_CONF=$SLURM_CONF"
