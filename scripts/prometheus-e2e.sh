#!/usr/bin/env bash
# End-to-end check of the Prometheus export against a real Prometheus (Debian's `prometheus`
# package, which also brings promtool):
#
#   1. promtool checks prometheus/ (config, rules, the alerts' unit tests);
#   2. `jobscope serve --demo` with tokens starts on a free loopback port; a running demo job
#      gets samples through POST /v1/jobs/{id}/metrics and agent batches through POST
#      /v1/samples (job samples with GPUs, node figures), every second while the test runs;
#   3. `promtool check metrics` on a real scrape;
#   4. Prometheus starts with the project's prometheus.yml (target, token file, 1 s intervals
#      rewritten; rules unchanged), loopback only, temporary storage;
#   5. after several scrapes, every expression of every Grafana dashboard (template variables
#      substituted with values that exist) and every recording rule is run through the HTTP
#      query API; one that returns no data fails the script. A job on a node without an agent
#      checks that node's usage is derived from its samples (source="jobs") and that the agent
#      node's is the agent's alone.
#
# Usage: scripts/prometheus-e2e.sh [path/to/jobscope]   (default: cargo build, debug)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in prometheus promtool python3 curl; do
    command -v "$tool" >/dev/null || { echo "prometheus-e2e: $tool is missing (apt-get install prometheus python3 curl)" >&2; exit 1; }
done

bin="${1:-}"
if [[ -z "$bin" ]]; then
    cargo build --quiet --locked --bin jobscope
    bin="${CARGO_TARGET_DIR:-target}/debug/jobscope"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${KEEP:-}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
    echo "prometheus-e2e: FAILED: $*" >&2
    echo "--- jobscope log (tail)" >&2; tail -n 30 "$work/jobscope.log" >&2 || true
    echo "--- prometheus log (tail)" >&2; tail -n 30 "$work/prometheus.log" >&2 || true
    exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== promtool: rules and their unit tests"
promtool check rules prometheus/rules/*.yml
promtool test rules prometheus/tests/*.test.yml

echo "== jobscope serve --demo"
reader=$(openssl rand -hex 20 2>/dev/null || python3 -c 'import secrets; print(secrets.token_hex(20))')
agent="agent-$reader"; admin="admin-$reader"; metrics_token="metrics-$reader"
printf 'reader %s\nagent %s\nadmin %s\n' "$reader" "$agent" "$admin" > "$work/tokens"
chmod 600 "$work/tokens"
printf '%s' "$metrics_token" > "$work/metrics-token"
port=$(free_port)
JOBSCOPE_METRICS_TOKEN="$metrics_token" RUST_LOG=warn "$bin" serve --demo --demo-speed 0.1 --port "$port" \
    --database-url "sqlite://$work/jobscope.db" --tokens-file "$work/tokens" \
    > "$work/jobscope.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -fsS "$base/v1/health" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$base/v1/health" >/dev/null || fail "jobscope did not start"

code=$(curl -s -o /dev/null -w '%{http_code}' "$base/metrics")
[[ "$code" == 401 ]] || fail "/metrics without a token answered $code, expected 401"

# The job the job-detail dashboard is checked on: a running demo job (it has a time limit,
# an allocation, an account) with GPUs, and the node its agent reports from. The demo's own
# agent reports that node too, every tick, with the GPUs of its partition's nodes: a node
# without GPUs would have its GPU series blanked between the feed's reports, and a scrape could
# land in the gap. The demo runs at a tenth of its speed (`--demo-speed 0.1`, a 50 s tick), so
# no job it runs ends within the test: its shortest run is six ticks.
job_id=""
for _ in $(seq 1 60); do
    job_json=$(curl -fsS -H "Authorization: Bearer $reader" "$base/v1/jobs?state=running&limit=100")
    read -r job_id node < <(python3 -c '
import json, sys
for job in json.load(sys.stdin)["jobs"]:
    if (job.get("gpu_count") or 0) > 0 and job.get("nodes"):
        print(job["id"], job["nodes"][0]); break
' <<<"$job_json") || true
    [[ -n "$job_id" ]] && break
    sleep 1
done
[[ -n "$job_id" ]] || fail "no running demo job with GPUs in 60 s"
echo "job $job_id on $node"

# One agent batch per second: growing counters, so rate() and increase() have data.
cat > "$work/feed.py" <<'EOF'
import datetime, json, sys, time, urllib.request
base, token, job_id, node, run_for = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json",
                 "X-Changed-By": "e2e", "X-Source": "prometheus-e2e"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
# A job on a node no agent reports: its node's usage series are derived from its samples
# (source="jobs").
status, answer = post("/v1/events/job-started", {"job_id": "e2e-noagent", "user": "e2e", "node_list": ["e2e-noagent-node"]})
if status not in (200, 201):
    print(f"feed: job-started answered {status}: {answer}", file=sys.stderr); sys.exit(1)
start = time.time(); i = 0
while True:
    i += 1
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    gpu = lambda idx, util: {"index": idx, "uuid": f"GPU-e2e-{idx}", "pci_bus_id": None, "vendor": "nvidia",
        "utilization_percent": util, "memory_used_bytes": 1_000_000_000 + i, "memory_total_bytes": 80_000_000_000,
        "power_watts": 250.0, "energy_joules": 1000.0 * i, "temperature_celsius": 61.0, "processes": []}
    status, answer = post("/v1/samples", {
        "node": node, "collected_at": now, "interval_seconds": 1.0,
        "jobs": [{"job_id": job_id, "collected_at": now, "cpu_usage_percent": 75.0,
                  "cpu_usage_usec": 2_000_000 * i, "cpu_user_usec": 1_500_000 * i, "cpu_system_usec": 500_000 * i,
                  "cpu_nr_throttled": i, "cpu_throttled_usec": 1000 * i,
                  "memory_current_bytes": 3_000_000_000, "memory_peak_bytes": 3_500_000_000,
                  "oom_kills": 0, "io_read_bytes": 4096 * i, "io_write_bytes": 8192 * i,
                  "io_read_ops": i, "io_write_ops": i, "pids_current": 12,
                  "gpus": [gpu(0, 90.0), gpu(1, 0.0)]}],
        "node_stats": {"cpu_usage_percent": 40.0, "memory_total_bytes": 256_000_000_000,
                       "memory_used_bytes": 64_000_000_000, "load_1": 12.0, "load_5": 10.0, "load_15": 8.0,
                       "cpu_count": 64, "gpus": [gpu(0, 90.0), gpu(1, 0.0)]}})
    if status != 200 or answer.get("accepted") != 1:
        print(f"feed: /v1/samples answered {status}: {answer}", file=sys.stderr); sys.exit(1)
    status, answer = post(f"/v1/jobs/{job_id}/metrics", {"cpu_usage": 70.0, "memory_usage_mb": 3000, "gpu_usage": 45.0})
    if status != 201:
        print(f"feed: compat sample answered {status}: {answer}", file=sys.stderr); sys.exit(1)
    status, answer = post("/v1/jobs/e2e-noagent/metrics", {"cpu_usage": 30.0, "memory_usage_mb": 1000})
    if status != 201:
        print(f"feed: agentless sample answered {status}: {answer}", file=sys.stderr); sys.exit(1)
    if i == 1:
        # A refused sample, so the 4xx and rejection panels have data too.
        post(f"/v1/jobs/{job_id}/metrics", {"cpu_usage": 170.0, "memory_usage_mb": 1})
        print("feed: first batch accepted", flush=True)
    if time.time() - start > run_for:
        break
    time.sleep(1)
EOF
python3 "$work/feed.py" "$base" "$admin" "$job_id" "$node" 600 > "$work/feed.log" 2>&1 &
feed_pid=$!
pids+=($feed_pid)
for _ in $(seq 1 50); do grep -q "first batch accepted" "$work/feed.log" && break; sleep 0.2; done
grep -q "first batch accepted" "$work/feed.log" || { cat "$work/feed.log" >&2; fail "posting samples failed"; }

echo "== promtool check metrics"
sleep 2
curl -fsS -H "Authorization: Bearer $metrics_token" "$base/metrics" > "$work/scrape.txt"
promtool check metrics < "$work/scrape.txt" || fail "promtool check metrics rejected the exposition"
grep -q "^hpc_job_cpu_seconds_total{job_id=\"$job_id\",node=\"$node\"}" "$work/scrape.txt" \
    || fail "the agent's sample did not reach /metrics"
echo "$(wc -l < "$work/scrape.txt") lines, $(wc -c < "$work/scrape.txt") bytes"

echo "== prometheus"
mkdir -p "$work/prom/rules" "$work/prom/data"
cp prometheus/rules/*.yml "$work/prom/rules/"
sed -e "/^ *#/!s|jobscope:8080|127.0.0.1:$port|" \
    -e "/^ *#/!s|/etc/prometheus/jobscope-token|$work/metrics-token|" \
    -e "/^ *#/!s|scrape_interval: 15s|scrape_interval: 1s|" \
    -e "/^ *#/!s|evaluation_interval: 15s|evaluation_interval: 1s|" \
    -e "/^ *#/!s|scrape_timeout: 10s|scrape_timeout: 1s|" \
    prometheus/prometheus.yml > "$work/prom/prometheus.yml"
# Only the target, the token path and the intervals may differ from the project's file.
[[ $(diff prometheus/prometheus.yml "$work/prom/prometheus.yml" | grep -c '^>') -eq 5 ]] \
    || fail "rewriting prometheus.yml changed more than expected"
promtool check config "$work/prom/prometheus.yml"
prom_port=$(free_port)
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
    --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"

cat > "$work/check.py" <<'EOF'
import json, re, sys, time, urllib.parse, urllib.request, glob
prom, job_id, node = sys.argv[1], sys.argv[2], sys.argv[3]
def query(expr):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {answer}")
    return answer["data"]["result"]

# Wait for the target to be up and scraped several times, and the rules evaluated.
deadline = time.time() + 90
while True:
    try:
        up = query('count_over_time(up{job="jobscope"}[1m])')
        ok = up and float(up[0]["value"][1]) >= 6 and query('up{job="jobscope"} == 1')
    except OSError:
        ok = False
    if ok:
        break
    if time.time() > deadline:
        raise SystemExit("Prometheus did not scrape jobscope six times within 90 s")
    time.sleep(1)
time.sleep(3)

chosen = {"job_id": job_id, "node": node}
builtins = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}
failures, checked = [], 0

# Every recording rule, as Prometheus loaded it: its own expression and the series it records.
rules = json.load(urllib.request.urlopen(prom + "/api/v1/rules"))["data"]["groups"]
recording = [r for g in rules for r in g["rules"] if r["type"] == "recording"]
if not recording:
    failures.append("no recording rules loaded")
for rule in recording:
    for expr in (rule["query"], rule["name"]):
        checked += 1
        if not query(expr):
            failures.append(f"recording rule {rule['name']}: no data for {expr}")
    if rule.get("health") != "ok":
        failures.append(f"recording rule {rule['name']} is {rule.get('health')}: {rule.get('lastError')}")

for path in sorted(glob.glob("grafana/dashboards/*.json")):
    board = json.load(open(path))
    values = {}
    for var in board.get("templating", {}).get("list", []):
        definition = var.get("definition") or var.get("query", {}).get("query", "")
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
        if not m:
            failures.append(f"{path}: variable {var['name']}: cannot check {definition!r}")
            continue
        metric, label = m.groups()
        existing = {s["metric"].get(label) for s in query(metric)}
        checked += 1
        if chosen.get(var["name"]) not in existing:
            failures.append(f"{path}: variable {var['name']}: {chosen.get(var['name'])!r} not among {sorted(x for x in existing if x)[:5]}")
        values["$" + var["name"]] = chosen.get(var["name"], "")
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for k, v in {**builtins, **values}.items():
                expr = expr.replace(k, v)
            if "$" in expr:
                failures.append(f"{path}: {panel['title']}: unsubstituted variable in {expr}")
                continue
            checked += 1
            if not query(expr):
                failures.append(f"{path}: panel {panel['title']!r}: no data for {expr}")
# Node usage: derived (source="jobs") where no agent reports, the agent's alone where one does.
for expr, want in [
    ('hpc_node_cpu_usage_percent{node="e2e-noagent-node",source="jobs"} == 30', True),
    ('hpc_node_memory_usage_bytes{node="e2e-noagent-node",source="jobs"}', True),
    (f'hpc_node_cpu_usage_percent{{node="{node}",source="jobs"}}', False),
    (f'hpc_node_cpu_usage_percent{{node="{node}",source=""}}', True),
]:
    checked += 1
    if bool(query(expr)) != want:
        failures.append(f"node usage: {expr} {'has no data' if want else 'should have none'}")
print(f"checked {checked} expressions")
if failures:
    print("\n".join(failures), file=sys.stderr)
    raise SystemExit(1)
EOF
echo "== every dashboard expression and recording rule"
python3 "$work/check.py" "$prom" "$job_id" "$node" || fail "some panels or rules would be empty"
kill "$feed_pid" 2>/dev/null || true
echo "prometheus-e2e: OK"
