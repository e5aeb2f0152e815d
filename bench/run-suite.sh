#!/usr/bin/env bash
# The standard benchmark suite, as `make bench` runs it: starts a fresh kvtx cluster (a master
# and two nodes in a temporary directory, on ports that do not collide with `make run`), runs
# `kvctl bench --suite standard` against it, a second cluster started with --insecure (the
# kvtx-plain column, for the TLS verdict), a local Badger store and etcd (which kvctl starts
# itself, so that it can restart it after preloading), then stops everything.
#
# Needs the binaries in $BIN (make bench builds them) and Debian's etcd-server for the etcd
# column: without `etcd` on $PATH the column is skipped, with a note at the top and the bottom.
#
# Environment (all optional):
#   BENCH_DURATION  measured window of each run (5s)      BENCH_WARMUP  warm-up of each run (1s)
#   BENCH_PORT      first port (19400): kvtx +0..+2, metrics +10..+12, etcd +20 and +21,
#                   the plaintext cluster +30..+32 (metrics +40..+42), pprof +50..+52
#   BENCH_OUT       where suite.txt, suite.json and the logs go (bin/bench-results)
#   BENCH_PPROF=1   serve /debug/pprof on ports 50, 51, 52 above the master's, to profile while it runs
#   BENCH_ARGS      more flags for kvctl bench (e.g. "--keys 100000 --value-size 1000")
#   BENCH_ETCD      the etcd binary (default: etcd on $PATH)
#   BENCH_PROTOCOL  the cluster's commit_protocol, classic or parallel (default: the built-in one)
#   BENCH_INSECURE=1  run the cluster and kvctl with --insecure (plaintext) instead of mutual TLS
#                   with certificates made for the run (kvctl cert init); no kvtx-plain column
#   BENCH_PLAIN=0   no kvtx-plain column (no second cluster, no TLS verdict)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
port=${BENCH_PORT:-19400}
out=${BENCH_OUT:-$BIN/bench-results}
duration=${BENCH_DURATION:-5s}
warmup=${BENCH_WARMUP:-1s}

for b in kvmaster kvnode kvctl; do
  if [ ! -x "$BIN/$b" ]; then
    echo "run-suite: $BIN/$b is missing: run make build (or make bench)" >&2
    exit 1
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/kvtx-bench.XXXXXX")
mkdir -p "$out/logs"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr() { echo "127.0.0.1:$((port + $1))"; }
config() { # config FILE OFFSET DATA: a cluster's config, its ports OFFSET above the suite's
  cat >"$1" <<EOF
master: {listen: "$(addr $2)", metrics: "$(addr $(($2 + 10)))", data_dir: "$3/master"}
nodes:
  - {name: node1, listen: "$(addr $(($2 + 1)))", metrics: "$(addr $(($2 + 11)))", data_dir: "$3/node1"}
  - {name: node2, listen: "$(addr $(($2 + 2)))", metrics: "$(addr $(($2 + 12)))", data_dir: "$3/node2"}
tls: {dir: "$dir/certs"}
EOF
  if [ -n "${BENCH_PROTOCOL:-}" ]; then
    echo "commit_protocol: $BENCH_PROTOCOL" >>"$1"
  fi
}
config "$dir/cluster.yaml" 0 "$dir"

# sec: how kvctl connects: --insecure, or the config, whose tls section names the certificates
# made here for the run.
if [ "${BENCH_INSECURE:-}" = 1 ]; then
  sec=(--insecure)
  security="insecure (plaintext)"
else
  "$BIN/kvctl" cert init --config "$dir/cluster.yaml" >/dev/null
  sec=(--config "$dir/cluster.yaml")
  security="mutual TLS"
fi

pprof() { # pprof N: the pprof flag of the process whose ports end in N, if BENCH_PPROF=1
  if [ "${BENCH_PPROF:-}" = 1 ]; then echo "--pprof-listen=$(addr $((50 + $1)))"; fi
}
start() { # start NAME ARGS...: run a kvtx process with its log in $out/logs
  local name=$1
  shift
  "$@" >"$out/logs/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}
insecure=()
if [ "${BENCH_INSECURE:-}" = 1 ]; then insecure=(--insecure); fi
start node1 "$BIN/kvnode" --config "$dir/cluster.yaml" "${insecure[@]}" $(pprof 1) node1
start node2 "$BIN/kvnode" --config "$dir/cluster.yaml" "${insecure[@]}" $(pprof 2) node2
start master "$BIN/kvmaster" --config "$dir/cluster.yaml" "${insecure[@]}" $(pprof 0)

# plain: whether to run the kvtx-plain cluster, the same cluster with --insecure, for the TLS
# verdict; it idles while the others run.
plain=1
if [ "${BENCH_INSECURE:-}" = 1 ] || [ "${BENCH_PLAIN:-}" = 0 ]; then plain=0; fi
if [ "$plain" = 1 ]; then
  config "$dir/plain.yaml" 30 "$dir/plain" # its tls section is unused: it runs --insecure
  start plain_node1 "$BIN/kvnode" --config "$dir/plain.yaml" --insecure node1
  start plain_node2 "$BIN/kvnode" --config "$dir/plain.yaml" --insecure node2
  start plain_master "$BIN/kvmaster" --config "$dir/plain.yaml" --insecure
fi

wait_up() { # wait_up ADDR KVCTL-FLAGS...: until the master at ADDR answers status
  local at=$1
  shift
  for i in $(seq 100); do
    if "$BIN/kvctl" --endpoint "$at" "$@" --timeout 1s status >/dev/null 2>&1; then return; fi
    for p in "${pids[@]}"; do
      if ! kill -0 "$p" 2>/dev/null; then
        echo "run-suite: a kvtx process exited at start; logs:" >&2
        tail -n 5 "$out"/logs/*.log >&2
        exit 1
      fi
    done
    if [ "$i" = 100 ]; then
      echo "run-suite: the kvtx cluster at $at did not come up within 20s; logs in $out/logs" >&2
      exit 1
    fi
    sleep 0.2
  done
}
wait_up "$(addr 0)" "${sec[@]}"
targets=kvtx
if [ "$plain" = 1 ]; then
  wait_up "$(addr 30)" --insecure
  targets=kvtx,kvtx-plain
fi

args=(--suite standard --endpoint "$(addr 0)" "${sec[@]}" --duration "$duration" --warmup "$warmup"
  --watch "master=$pid_master,node1=$pid_node1,node2=$pid_node2"
  --commit "$(git describe --always --dirty 2>/dev/null || echo unknown)" --out "$out")
if [ "$plain" = 1 ]; then
  args+=(--plain-endpoint "$(addr 30)" --watch-plain "master=$pid_plain_master,node1=$pid_plain_node1,node2=$pid_plain_node2")
fi
etcd=${BENCH_ETCD:-$(command -v etcd || true)}
if [ -n "$etcd" ] && [ -x "$etcd" ]; then
  args+=(--targets "$targets,badger,etcd" --etcd-bin "$etcd" --etcd-endpoint "$(addr 20)" --etcd-data-dir "$dir/etcd/data")
else
  note="etcd is not installed (apt-get install etcd-server): the etcd column is SKIPPED"
  echo "run-suite: NOTE: $note" >&2
  args+=(--targets "$targets,badger" --note "$note")
fi

echo "kvtx bench: nproc $(nproc), cluster on $(addr 0), commit protocol ${BENCH_PROTOCOL:-default}, $security, results in $out"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$BIN/kvctl" bench "${args[@]}" ${BENCH_ARGS:-}
