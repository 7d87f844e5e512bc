#!/usr/bin/env bash
# A real single-node Slurm (munge + slurmctld + slurmd on localhost): submit a sharded grid as a
# job array and the merge as a dependent job, wait, and compare with a single-process run.
# Exit 77 (skip) when the daemons are missing or cannot start here; 0 pass; 1 fail. It installs
# slurm-wlm and munge with apt-get only when asked (DECLAB_TEST_INSTALL=1, as .ci/run does).
# Usage: tests/slurm/slurm-test.sh DECLAB_BIN EXPERIMENT.yaml WORKDIR
set -uo pipefail
bin="$(readlink -f "$1")"; cfg="$(readlink -f "$2")"; work="$(readlink -f "$3")"
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; for f in "$work"/slurm/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
[ "$(id -u)" = 0 ] || skip "needs root to install and start munge and slurm"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "${DECLAB_TEST_INSTALL:-0}" = 1 ] \
    || skip "slurm-wlm and munge are not installed; DECLAB_TEST_INSTALL=1 make test (as .ci/run does) lets the test install them with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
    || skip "apt-get cannot install slurm-wlm and munge"
fi
S="$work/slurm"; mkdir -p "$S/state" "$S/spool" "$S/munge" "$S/out"
host=$(hostname -s)
# munge: own key and socket, so nothing on the machine is touched
dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 2>/dev/null; chmod 400 "$S/munge/munge.key"
sock="$S/munge/munge.socket"
munged --force --key-file="$S/munge/munge.key" --socket="$sock" --pid-file="$S/munge/munged.pid" \
  --log-file="$S/munged.log" --seed-file="$S/munge/seed" 2>/dev/null || skip "munged does not start"
cat > "$S/slurm.conf" <<CONF
ClusterName=declabtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
SlurmctldPort=16917
SlurmdPort=16918
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$S/slurm.conf"
cleanup() {
  [ -f "$S/slurmd.pid" ] && kill "$(cat "$S/slurmd.pid")" 2>/dev/null
  [ -f "$S/slurmctld.pid" ] && kill "$(cat "$S/slurmctld.pid")" 2>/dev/null
  [ -f "$S/munge/munged.pid" ] && kill "$(cat "$S/munge/munged.pid")" 2>/dev/null
}
trap cleanup EXIT
slurmctld -i 2>>"$S/start.log" || skip "slurmctld does not start: $(tail -3 "$S/slurmctld.log" 2>/dev/null)"
slurmd 2>>"$S/start.log" || skip "slurmd does not start: $(tail -3 "$S/slurmd.log" 2>/dev/null)"
for _ in $(seq 1 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -Eq 'idle|mix' && break
  sleep 1
done
sinfo -h -o '%T' 2>/dev/null | grep -Eq 'idle|mix' || skip "the Slurm node never became idle: $(sinfo 2>&1 | tail -2)"

cd "$work"
name=$(sed -n 's/^name: *//p' "$cfg")
jid=$(sbatch --parsable --array=0-2 --cpus-per-task=1 --mem=1G --output="$S/shard-%a.log" \
  --export=ALL,DECLAB_BIN="$bin" "$OLDPWD/deploy/slurm/run-grid.sbatch" "$cfg") || fail "sbatch of the array failed"
mid=$(sbatch --parsable --dependency=afterok:"$jid" --mem=1G --output="$S/merge.log" \
  --export=ALL,DECLAB_BIN="$bin" "$OLDPWD/deploy/slurm/merge.sbatch" "results/$name") || fail "sbatch of the merge failed"
for _ in $(seq 1 300); do
  state=$(scontrol show job "$mid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case "$state" in COMPLETED) break ;; FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) fail "merge job $state" ;; esac
  sleep 1
done
[ "$state" = COMPLETED ] || fail "the merge job did not complete in time (state: $state)"
"$bin" run "$cfg" --out "$work/single" --no-progress 2>/dev/null || fail "single-process run failed"
python3 - "$work/results/$name/samples.jsonl" "$work/single/samples.jsonl" <<'PY' || fail "merged Slurm shards differ from the single-process run"
import json, sys
def load(p):
    out = []
    for line in open(p):
        r = json.loads(line)
        r["trace"].pop("forward_ms", None); r["trace"].pop("sampler_us", None); r.pop("timing", None)
        out.append(r)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if a == b and len(a) > 0 else 1)
PY
echo "PASS: $(wc -l < "$work/results/$name/samples.jsonl") samples from 3 Slurm array tasks + merge job equal the single-process run"
