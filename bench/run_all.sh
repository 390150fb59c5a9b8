#!/usr/bin/env bash
# Every run behind BENCHMARKS.md, in order. Results (JSON + console log) go to bench/results/.
# Usage: bench/run_all.sh [python]     (default: python3 on PATH, with zcraq installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=bench/results
mkdir -p "$OUT"

run() {  # run NAME ARGS...: one invocation, its log and JSON under $OUT
    local name=$1; shift
    echo "== $name: chain_bench.py $*"
    "$PY" bench/chain_bench.py "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"
}

# 1. The main run: raw zmq baseline, then 1-node and 3-node chains; 8 clients, 10 s per workload.
run main --nodes 1,3 --clients 8 --duration 10 --value-size 64 --workload all

# 2. Sensitivity to the load-generator layout (8 clients in 8, 4 or 2 processes).
for procs in 8 2; do
    run "procs$procs" --nodes 1 --clients 8 --procs "$procs" --duration 10 --workload read
done

# 3. Durable writes (fsync per group commit) instead of the default async.
run sync --nodes 1,3 --clients 8 --duration 10 --workload write --durability sync --no-baseline

# 4. Baseline with three echo servers (the shape of reads spread over a 3-node chain).
run echo3 --no-chain --baseline-servers 3 --clients 8 --duration 10 --workload read

# 5. Read scaling: each node (and each echo server) capped at 0.2 CPU by a cgroup quota, so that
#    the chain, not the two shared CPUs, limits reads; 1, 2 and 3 nodes.
run scaling --nodes 1,2,3 --clients 12 --duration 10 --workload read,mixed --node-cpu 0.2

# 5b. Monitoring: chains without and with /metrics scraped every second; the node path with and without.
run metrics --nodes 1,3 --clients 8 --duration 10 --workload read,write --metrics both
echo "== metrics on the node path: core_bench.py --metrics --store memory"
"$PY" bench/core_bench.py --metrics --store memory 2>&1 | tee "$OUT/core-metrics.log"

# 6. Failover: kill -9 of the head, a middle node and the tail, three times each.
echo "== failover: failover.py --repeats 3"
"$PY" bench/failover.py --repeats 3 --json "$OUT/failover.json" 2>&1 | tee "$OUT/failover.log"

# 7. The pipelined client against the blocking one: N tasks over one AsyncZClient, N threads.
echo "== async: async_bench.py --concurrency 8,64 --duration 10"
"$PY" bench/async_bench.py --concurrency 8,64 --duration 10 --json "$OUT/async.json" 2>&1 | tee "$OUT/async.log"

# 8. The version index: its fill at start and memory for 100,000 and 1,000,000 keys; latest as keys
#    are overwritten, with and without it.
for keys in 100000 1000000; do
    echo "== index: index_bench.py --keys $keys"
    "$PY" bench/index_bench.py --keys "$keys" 2>&1 | tee "$OUT/index-$keys.log"
done
echo "== index: index_bench.py --overwrites"
"$PY" bench/index_bench.py --overwrites 2>&1 | tee "$OUT/index-overwrites.log"

# 9. Catch-up: a node joining 1-, 2- and 3-node chains holding 100,000 keys, three runs; then the
#    CPU per key of serving and storing a page, in one process.
echo "== catch-up: catchup_bench.py --runs 3"
"$PY" bench/catchup_bench.py --runs 3 2>&1 | tee "$OUT/catchup.log"
echo "== catch-up: catchup_bench.py --per-key"
"$PY" bench/catchup_bench.py --per-key 2>&1 | tee "$OUT/catchup-per-key.log"

# 10. Pipelined load (raw DEALER sockets, 128 requests in flight): 3-node strong reads, 90/10 on 16
#    hot keys, 16-key read_many, echo baseline, sync writes, and read scaling of 1, 3 and 5 nodes
#    each capped at 0.15 CPU; 3 interleaved rounds, medians. Then sync writes again with 1,024 in
#    flight (group commit: how many writes one batch and one frame per hop carry grows with them).
#    With py-spy beside the Python, one more window each profiles a node.
SPY=$(dirname "$(command -v "$PY")")/py-spy
PROFILE=()
[ -x "$SPY" ] && PROFILE=(--py-spy "$SPY" --profile-dir "$OUT/pipeline-spy")
echo "== pipeline: pipeline_bench.py --rounds 3 --duration 5 ${PROFILE[*]}"
"$PY" bench/pipeline_bench.py --rounds 3 --duration 5 "${PROFILE[@]}" --json "$OUT/pipeline.json" 2>&1 \
    | tee "$OUT/pipeline.log"
echo "== pipeline: pipeline_bench.py --phases sync --inflight 1024 --rounds 3 --duration 5"
"$PY" bench/pipeline_bench.py --phases sync --inflight 1024 --rounds 3 --duration 5 \
    --json "$OUT/pipeline-sync-1024.json" 2>&1 | tee "$OUT/pipeline-sync-1024.log"

# 11. Read modes under a mixed load (90 % reads, 10 % writes on 16 keys, 128 in flight): strong,
#    bounded with 10, 100 and 1,000 ms, eventual; reads/s and how many reads asked the tail.
echo "== read modes: read_modes_bench.py --rounds 3 --duration 5"
"$PY" bench/read_modes_bench.py --rounds 3 --duration 5 --json "$OUT/read-modes.json" 2>&1 \
    | tee "$OUT/read-modes.log"

# 12. Watches: 0, 1 and 4 watchers following a chain under writes; how soon a change reaches them.
echo "== watches: watch_bench.py --rounds 3 --duration 5"
"$PY" bench/watch_bench.py --rounds 3 --duration 5 --json "$OUT/watch.json" 2>&1 | tee "$OUT/watch.log"
