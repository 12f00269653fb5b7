#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for the tests and for trying the SLURM launcher:
#
#   tools/local_slurm.sh start DIR   # prints SLURM_CONF=DIR/slurm.conf once the node is idle
#   tools/local_slurm.sh stop DIR    # cancels its jobs, stops its daemons
#
# Everything it writes is under DIR (config, munge key and socket, state, logs, pid files), so
# it never touches another cluster's configuration: clients find it through SLURM_CONF only.
# It installs Debian's slurmctld, slurmd, slurm-client and munge when missing (root and apt
# needed; exit status 3 with the reason where it cannot run). start is idempotent: with the
# daemons already up it only waits for the node.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")
conf=$dir/slurm.conf
export SLURM_CONF=$conf
cannot() { echo "cannot run a local SLURM here: $*" >&2; exit 3; }

alive() {   # the pid in file $1 is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sbatch munged; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || cannot "${missing[*]} missing and not root to install them"
    command -v apt-get >/dev/null 2>&1 || cannot "${missing[*]} missing and no apt-get"
    # The packages would start their own daemons on the system's configuration: a policy-rc.d
    # that refuses service starts keeps them down (left alone when the system has one).
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && made_policy=1
    fi
    local pkgs="slurmctld slurmd slurm-client munge" ok=
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $pkgs >"$dir/apt.log" 2>&1 && ok=1
    if [ -z "$ok" ]; then   # a stale package list: refresh it once
        apt-get update -q >>"$dir/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends $pkgs >>"$dir/apt.log" 2>&1 && ok=1
    fi
    [ -n "$made_policy" ] && rm -f $policy
    [ -n "$ok" ] || cannot "apt-get install $pkgs failed (see $dir/apt.log)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    # The node's cores, not the caller's thread setting: nproc reads OMP_NUM_THREADS.
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$conf" <<CONF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Credentials expire after 10 s instead of 120: a requeued job waits that long to run again.
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups (a container has none to give) and no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
InactiveLimit=0
MinJobAge=30
# Jobs of the higher tier preempt (requeue) those of the lower one, which get submitit's USR2.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2
CONF
}

wait_idle() {
    local deadline=$((SECONDS + 60)) state=
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
        case $state in
            idle|mix|alloc) echo "SLURM_CONF=$conf"; return 0 ;;
            drain*|down|down~) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    echo "the local SLURM node did not come up in 60 s (state: ${state:-none}); logs in $dir/log" >&2
    exit 1
}

start() {
    [ "$(id -u)" -eq 0 ] || cannot "not root (the daemons run as root with their own config)"
    mkdir -p "$dir"
    install_packages
    if alive "$dir/run/slurmctld.pid" && alive "$dir/run/slurmd.pid" && alive "$dir/munge/munged.pid"; then
        wait_idle
        return
    fi
    stop_daemons
    mkdir -p "$dir"/{state,spool,log,run,munge}
    chmod 700 "$dir/munge"
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
    fi
    [ -s "$conf" ] || write_conf
    munged --force --key-file "$dir/munge/munge.key" --socket "$dir/munge/munge.socket" \
        --pid-file "$dir/munge/munged.pid" --log-file "$dir/munge/munged.log" \
        --seed-file "$dir/munge/munged.seed"
    # -c: no state from an earlier start (job ids then restart at 1; see the launcher's folders).
    slurmctld -c -f "$conf"
    slurmd -f "$conf"
    wait_idle
}

stop_pid() {   # SIGTERM, then SIGKILL after 10 s
    local file=$1 pid
    alive "$file" || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_daemons() {
    stop_pid "$dir/run/slurmd.pid"
    stop_pid "$dir/run/slurmctld.pid"
    stop_pid "$dir/munge/munged.pid"
}

stop() {
    [ -d "$dir" ] || return 0
    if alive "$dir/run/slurmctld.pid"; then
        scancel --full --quiet --user root 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while [ $SECONDS -lt $deadline ] && [ -n "$(squeue -h -o %i 2>/dev/null || true)" ]; do
            sleep 0.5
        done
    fi
    stop_daemons
    # A job step whose daemon is gone: only this cluster's (its environment names our config).
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}; pid=${pid%/environ}
        [ "$(cat /proc/$pid/comm 2>/dev/null)" = slurmstepd ] || continue
        tr '\0' '\n' < "$env" 2>/dev/null | grep -qx "SLURM_CONF=$conf" && kill -9 "$pid" 2>/dev/null || true
    done
    return 0
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
