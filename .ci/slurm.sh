#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost (munged + slurmctld + slurmd), for sweep tests and CI.
#
#   eval "$(bash .ci/slurm.sh up)"   # install if missing, start, wait until the node is idle;
#                                    # stdout is only the `export SLURM_CONF=...` line(s), logs go to stderr
#   bash .ci/slurm.sh status         # daemons, node, queue; exit 0 when up, 1 when not
#   bash .ci/slurm.sh env            # print the export line(s) again
#   bash .ci/slurm.sh down           # scancel everything, wait for an empty queue, stop the daemons
#
# Environment:
#   LAB_SLURM_DIR      state dir (default /tmp/slurm-lab). Keep it short: slurmd puts Unix sockets there
#                      (108-byte path limit). Holds slurm.conf, logs, pid files, state, spool, jobcomp.log.
#   LAB_SLURM_TIMEOUT  seconds `up` waits for munged and for the node to be idle (default 30)
#   LAB_SLURM_PORT     slurmctld port (default 6817; slurmd uses the next one)
#   LAB_SACCT_SHIM     where the sacct shim goes (default /usr/local/bin/sacct, which precedes /usr/bin)
#
# Root only for up/down (slurmd and munged need it). Packages: slurmctld slurmd slurm-client munge
# from Debian, --no-install-recommends (~8 packages, ~12 MB). `up` when already up is a no-op.
# Jobs inherit SLURM_CONF from the submitting shell; submitit's in-job `scontrol requeue` needs it.
# The sacct shim (.ci/sacct-shim) lets submitit notice jobs that died without a result (see its header).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${LAB_SLURM_DIR:-/tmp/slurm-lab}
CONF=$DIR/slurm.conf
TIMEOUT=${LAB_SLURM_TIMEOUT:-30}
PORT=${LAB_SLURM_PORT:-6817}
SHIM_DST=${LAB_SACCT_SHIM:-/usr/local/bin/sacct}
PKGS=(slurmctld slurmd slurm-client munge)
NODE=localhost
export SLURM_CONF=$CONF

log() { printf '[slurm] %s\n' "$*" >&2; }
die() { printf '[slurm] ERROR: %s\n' "$*" >&2; exit 1; }
tails() {
  local f
  for f in "$DIR/slurmctld.log" "$DIR/slurmd.log" /var/log/munge/munged.log; do
    [ -r "$f" ] && { printf -- '--- tail %s\n' "$f" >&2; tail -n 15 "$f" >&2; }
  done
  return 0
}
need_root() { [ "$(id -u)" = 0 ] || die "'$1' needs root (slurmd and munged run as root/munge)"; }

# A pid from a pid file that names a live (non-zombie) process with the expected command name.
# PID 1 in some sandboxes reaps late and kill -0 succeeds on a zombie: a zombie counts as gone.
alive() {
  local pid st
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$st" != Z ] && [ "$st" != X ] && grep -qx "$2" "/proc/$pid/comm" 2>/dev/null
}
ctld_up()  { alive "$DIR/slurmctld.pid" slurmctld; }
slurmd_up() { alive "$DIR/slurmd.pid" slurmd; }
# `scontrol ping` answers at once; sinfo retries for ~9 s when the controller is not listening.
node_state() { scontrol ping >/dev/null 2>&1 || return 0; sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }
is_up() {
  ctld_up && slurmd_up || return 1
  case $(node_state) in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}
munge_ok() { command -v munge >/dev/null && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
shim_on_path() { local s; s=$(command -v sacct 2>/dev/null) && grep -q lab-sacct-shim "$s" 2>/dev/null; }

print_env() {
  echo "export SLURM_CONF=$CONF"
  # The shim must be the `sacct` that submitit finds; if SHIM_DST is not first on PATH, put its dir first.
  if [ -r "$DIR/bin/sacct" ] && ! shim_on_path; then echo "export PATH=$DIR/bin:\$PATH"; fi
}

have_pkgs() {
  local b
  for b in slurmctld slurmd sinfo scontrol sbatch munged munge; do command -v "$b" >/dev/null || return 1; done
}

install_pkgs() {
  have_pkgs && return 0
  command -v apt-get >/dev/null || die "Slurm/munge are not installed and there is no apt-get: install ${PKGS[*]}"
  local apt=(apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=300) t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  log "installing ${PKGS[*]} (--no-install-recommends)"
  if ! "${apt[@]}" install "${PKGS[@]}" >"$DIR/apt.log" 2>&1; then
    # Missing or stale package lists: refresh once and retry. Anything else is a real failure.
    if grep -qE 'Unable to locate package|has no installation candidate|Failed to fetch|404 +Not Found' "$DIR/apt.log"; then
      log "package lists missing or stale: apt-get update, then retry"
      apt-get -q -o DPkg::Lock::Timeout=300 update >>"$DIR/apt.log" 2>&1 || true
      "${apt[@]}" install "${PKGS[@]}" >>"$DIR/apt.log" 2>&1 || { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install failed (log: $DIR/apt.log)"; }
    else
      tail -n 20 "$DIR/apt.log" >&2; die "apt-get install failed (log: $DIR/apt.log)"
    fi
  fi
  have_pkgs || die "installed ${PKGS[*]} but slurmctld/slurmd/munged are still missing"
  log "packages installed in $((SECONDS - t0)) s"
}

write_conf() {
  local cpus mem_mb defmem tmp
  cpus=$(nproc)
  mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)   # leave 20% for the driver
  defmem=$(( mem_mb / cpus < 1024 ? mem_mb / cpus : 1024 ))
  tmp=$(mktemp "$DIR/.slurm.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Generated by .ci/slurm.sh for $(hostname) ($cpus CPUs, $(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo) MB); rewritten by \`up\` whenever the daemons are not running.
ClusterName=lab
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it restarts (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to scontrol (and so to the sacct shim) for an hour; older ones are read
# from the jobcomp log below.
MinJobAge=3600
KillWait=5
Waittime=0
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks for no memory gets the whole node and jobs run one at a time.
DefMemPerCPU=$defmem
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv -f "$tmp" "$CONF"; chmod 0644 "$CONF"; fi
}

install_shim() {
  local real="" d
  install -d -m 0755 "$DIR/bin"
  install -m 0755 "$HERE/sacct-shim" "$DIR/bin/sacct"
  # A real sacct that answers (accounting configured) needs no shim. With this slurm.conf it never does.
  for d in ${PATH//:/ }; do
    if [ -x "$d/sacct" ] && ! grep -q lab-sacct-shim "$d/sacct" 2>/dev/null; then real=$d/sacct; break; fi
  done
  if [ -n "$real" ] && "$real" -n -X -j 1 >/dev/null 2>&1; then
    log "$real works; no sacct shim installed"; return 0
  fi
  if [ -e "$SHIM_DST" ] && ! grep -q lab-sacct-shim "$SHIM_DST" 2>/dev/null; then
    log "$SHIM_DST exists and is not the shim; leaving it (the shim is $DIR/bin/sacct, see the PATH export)"
    return 0
  fi
  if ! cmp -s "$HERE/sacct-shim" "$SHIM_DST"; then
    install -D -m 0755 "$HERE/sacct-shim" "$SHIM_DST" && log "sacct shim installed: $SHIM_DST"
  fi
}

start_munge() {
  munge_ok && return 0
  id munge >/dev/null 2>&1 || die "no 'munge' user: is the munge package installed?"
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  runuser -u munge -- munged || { tails; die "munged failed to start"; }
  local deadline=$((SECONDS + TIMEOUT))
  until munge_ok; do
    [ $SECONDS -lt $deadline ] || { tails; die "munged not answering after ${TIMEOUT}s"; }
    sleep 0.1
  done
  : >"$DIR/munged.ours"   # `down` stops munged only if `up` started it
}

other_daemon() {   # a slurmctld/slurmd not started from this DIR would hold the ports
  local p c mine
  mine=" $(cat "$DIR/slurmctld.pid" "$DIR/slurmd.pid" 2>/dev/null | tr '\n' ' ') "
  for p in /proc/[0-9]*; do
    c=$(cat "$p/comm" 2>/dev/null) || continue
    if [ "$c" = "$1" ] && [[ $mine != *" ${p#/proc/} "* ]]; then
      grep -q '^State:.*Z' "$p/status" 2>/dev/null && continue
      echo "${p#/proc/}"; return 0
    fi
  done
  return 1
}

cmd_up() {
  need_root up
  local t0 pid
  t0=$(date +%s.%N)
  mkdir -p "$DIR"
  if is_up; then
    install_shim
    log "already up ($DIR, node $(node_state))"
    print_env; return 0
  fi
  install_pkgs
  install -d -m 0755 "$DIR/state" "$DIR/spool"
  if ! { ctld_up && slurmd_up; }; then write_conf; fi   # never rewrite the conf under running daemons
  install_shim
  start_munge
  if ! ctld_up; then
    pid=$(other_daemon slurmctld) && die "another slurmctld (pid $pid) is running, not from $DIR: stop it (its own 'down', LAB_SLURM_DIR) or set LAB_SLURM_PORT"
    rm -f "$DIR/slurmctld.pid"
    slurmctld -f "$CONF" || { tails; die "slurmctld failed to start"; }
  fi
  if ! slurmd_up; then
    pid=$(other_daemon slurmd) && die "another slurmd (pid $pid) is running, not from $DIR"
    rm -f "$DIR/slurmd.pid"
    slurmd -f "$CONF" -N "$NODE" || { tails; die "slurmd failed to start"; }
  fi
  local deadline=$((SECONDS + TIMEOUT)) st resumed=0
  while :; do
    st=$(node_state)
    case $st in
      idle|mixed|allocated|completing) break ;;
      down*|drain*|fail*)   # a node left down/drained by an earlier run: return it to service once
        if [ $resumed = 0 ]; then scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; resumed=1; fi ;;
    esac
    ctld_up || { tails; die "slurmctld died during start-up"; }
    slurmd_up || { tails; die "slurmd died during start-up"; }
    [ $SECONDS -lt $deadline ] || { tails; die "node not idle after ${TIMEOUT}s (state: '${st:-no answer}'; logs in $DIR)"; }
    sleep 0.1
  done
  log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s: $(nproc) CPUs, conf $CONF"
  print_env
}

stop_pidfile() {   # pidfile name
  local pid
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$1" "$2" || break; sleep 0.1; done
  if alive "$1" "$2"; then log "$2 ($pid) ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$1"
}

cmd_down() {
  need_root down
  if ctld_up; then
    local ids
    ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
      log "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
    fi
    # Running jobs (slurmstepd + job processes) would outlive slurmd under proctrack/linuxproc.
    for _ in $(seq 300); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
    [ -z "$(squeue -h -o %A 2>/dev/null)" ] || log "queue still not empty after 30 s: $(squeue -h 2>/dev/null | head -n 5)"
  fi
  stop_pidfile "$DIR/slurmd.pid" slurmd
  stop_pidfile "$DIR/slurmctld.pid" slurmctld
  if [ -e "$DIR/munged.ours" ]; then
    stop_pidfile /run/munge/munged.pid munged
    rm -f "$DIR/munged.ours"
  fi
  log "down"
}

cmd_status() {
  local rc=0
  if ctld_up; then echo "slurmctld: running (pid $(cat "$DIR/slurmctld.pid"))"; else echo "slurmctld: stopped"; rc=1; fi
  if slurmd_up; then echo "slurmd:    running (pid $(cat "$DIR/slurmd.pid"))"; else echo "slurmd:    stopped"; rc=1; fi
  if munge_ok; then echo "munged:    answering"; else echo "munged:    not answering"; rc=1; fi
  if [ $rc = 0 ]; then
    echo "node:      $NODE $(node_state)"
    is_up || rc=1
    echo "queue:"; squeue 2>/dev/null | sed 's/^/  /'
  fi
  echo "sacct:     $(command -v sacct || echo missing)$(shim_on_path && echo ' (lab shim)')"
  echo "conf:      $CONF"
  return $rc
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) print_env ;;
  *) echo "usage: bash .ci/slurm.sh up|down|status|env   (see the header of this file)" >&2; exit 2 ;;
esac
