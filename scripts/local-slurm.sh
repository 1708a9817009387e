#!/usr/bin/env bash
# A real one-node Slurm (munged + slurmctld + slurmd) on this machine, without systemd.
#
# Used by tests/slurm and for trying SlurmCompute locally. Runs as root on Debian 12; re-runnable.
#   scripts/local-slurm.sh install             apt-get install slurm-wlm munge (skipped when present)
#   scripts/local-slurm.sh start               write slurm.conf, start the daemons, wait for the node
#   scripts/local-slurm.sh stop                stop the daemons by their PID files
#   scripts/local-slurm.sh status              exit 0 when the node takes jobs, 1 otherwise
#   scripts/local-slurm.sh restart-controller [SECONDS_DOWN]
#                                              kill slurmctld, stay down that long (default 0), start it
# Env: LOCAL_SLURM_WAIT_S (default 60) bounds every wait.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
LOCK=/run/local-slurm.lock
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}

die() {
    echo "local-slurm: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, writes /etc/slurm, starts daemons)"
}

lock() { # one start/stop/restart/status at a time: a status taken mid-restart would read "down"
    [ "$(id -u)" -eq 0 ] || return 0 # a non-root status cannot take the lock: go ahead unlocked
    exec 9>>"$LOCK"
    flock -w $((WAIT_S * 2)) 9 || die "another local-slurm.sh still holds $LOCK"
}

installed() {
    local pkg
    for pkg in slurm-wlm munge; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

cmd_install() {
    need_root
    if installed; then
        echo "local-slurm: slurm-wlm and munge already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    local apt_install=(apt-get install -y --no-install-recommends slurm-wlm munge)
    # The package lists may be missing (fresh image) or stale: refresh them once, only when needed.
    if ! "${apt_install[@]}"; then
        apt-get update
        "${apt_install[@]}"
    fi
    installed || die "slurm-wlm/munge still not installed after apt-get"
}

alive() { # alive PIDFILE: the process named in PIDFILE exists (readable by non-root users too)
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

stop_daemon() { # stop_daemon PIDFILE: SIGTERM the daemon and wait until it has exited
    local pid deadline=$((SECONDS + WAIT_S))
    alive "$1" || return 0
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || return 0
    while [ -d "/proc/$pid" ]; do
        [ $SECONDS -lt $deadline ] || die "process $pid ($1) did not exit within ${WAIT_S}s"
        sleep 0.1
    done
    rm -f "$1"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read CPUs/RealMemory from 'slurmd -C'"
    mkdir -p /etc/slurm
    cat >"$CONF.tmp" <<EOF
# Written by scripts/local-slurm.sh: one node, no cgroups, no slurmdbd.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Finished jobs go to a text file that 'sacct -c' reads (there is no slurmdbd).
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
# Finished jobs stay visible to squeue/scontrol this long.
MinJobAge=300
# Clients give up on an unreachable controller sooner (about 2x this) than with the default 10 s.
MessageTimeout=5
# Without it every job takes all RealMemory and jobs run one at a time.
DefMemPerCPU=100
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    alive "$MUNGE_PID" && return
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged 9>&- # daemons must not inherit (and hold) the lock
    local deadline=$((SECONDS + WAIT_S))
    until munge_ok; do
        [ $SECONDS -lt $deadline ] || die "munged not answering after ${WAIT_S}s: $(tail -n 20 /var/log/munge/munged.log 2>&1)"
        sleep 0.1
    done
}

node_ready() { # the node takes jobs: idle, or busy with jobs that survived a restart
    sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc|comp)$'
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_S))
    until node_ready; do
        if [ $SECONDS -ge $deadline ]; then
            echo "local-slurm: node not idle after ${WAIT_S}s; sinfo: $(sinfo 2>&1 | tr '\n' ' ')" >&2
            echo "--- $LOG_DIR/slurmctld.log ---" >&2
            tail -n 20 "$LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
            echo "--- $LOG_DIR/slurmd.log ---" >&2
            tail -n 20 "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
}

start_slurmctld() {
    alive "$CTLD_PID" || /usr/sbin/slurmctld 9>&-
}

cmd_start() {
    need_root
    command -v slurmctld >/dev/null || die "Slurm is not installed: run '$0 install' first"
    mkdir -p "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
    write_conf
    start_munge
    start_slurmctld
    alive "$SLURMD_PID" || /usr/sbin/slurmd 9>&-
    wait_ready
    echo "local-slurm: ready ($(sinfo -h -o '%P %a %D %t %N'))"
}

cmd_stop() {
    need_root
    local pidfile
    for pidfile in "$SLURMD_PID" "$CTLD_PID" "$MUNGE_PID"; do
        stop_daemon "$pidfile"
    done
    echo "local-slurm: stopped"
}

cmd_status() {
    local pidfile ok=0
    for pidfile in "$MUNGE_PID" "$CTLD_PID" "$SLURMD_PID"; do
        if alive "$pidfile"; then
            echo "$(basename "$pidfile" .pid): running (pid $(cat "$pidfile"))"
        else
            echo "$(basename "$pidfile" .pid): not running"
            ok=1
        fi
    done
    if [ $ok -eq 0 ] && node_ready; then
        sinfo
        return 0
    fi
    return 1
}

cmd_restart_controller() {
    need_root
    local down_s=${1:-0}
    [[ "$down_s" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SECONDS_DOWN must be a number, got '$down_s'"
    stop_daemon "$CTLD_PID"
    sleep "$down_s"
    start_slurmctld
    wait_ready
    echo "local-slurm: slurmctld restarted"
}

case "${1:-}" in
install) cmd_install ;;
start) lock && cmd_start ;;
stop) lock && cmd_stop ;;
status) lock && cmd_status ;;
restart-controller) lock && cmd_restart_controller "${2:-0}" ;;
*) die "usage: $0 install|start|stop|status|restart-controller [SECONDS_DOWN]" ;;
esac
