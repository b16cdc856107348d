#!/usr/bin/env bash
# Load test of examples/bench_server.rs over loopback: requests/s and latency of each mode,
# as ratios to bare axum measured in the same run. See benches/README.md.
#
#   bash benches/load.sh                         # all modes, 3 interleaved rounds of 5 s
#   ROUNDS=5 DURATION=10 bash benches/load.sh
#   MODES="bare stack-rs256" bash benches/load.sh
#   INSTR=1 bash benches/load.sh                 # also instructions/request (callgrind)
#   INSTR=1 PROFILES=/some/dir bash benches/load.sh   # and keep the callgrind profiles there
#
# Server pinned to CPU 0, wrk to CPU 1. Everything is bounded: each server exits by itself
# (--exit-after), each wrk run lasts DURATION seconds, and only 127.0.0.1 is ever contacted.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
PORT_BASE=${PORT_BASE:-18100}
# Default order puts the servers compared by a ratio next to each other in every round.
MODES=${MODES:-"cached-rs256 bare cached-es256 cached-eddsa uncached-rs256 raw-rs256 jwt-authorizer bare07 uncached-es256 raw-es256 uncached-eddsa raw-eddsa mcp-noauth mcp-auth"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
INSTR=${INSTR:-0}
INSTR_DURATION=${INSTR_DURATION:-10}
PROFILES=${PROFILES:-}

cd "$(dirname "$0")/.."

for tool in wrk taskset curl; do
    if ! command -v "$tool" >/dev/null; then
        case $tool in
            wrk) echo "wrk is not installed: apt-get install wrk" >&2 ;;
            taskset) echo "taskset is not installed: apt-get install util-linux" >&2 ;;
            curl) echo "curl is not installed: apt-get install curl" >&2 ;;
        esac
        exit 1
    fi
done
if [[ $INSTR == 1 ]] && ! command -v callgrind_control >/dev/null; then
    echo "INSTR=1 needs valgrind: apt-get install valgrind" >&2
    exit 1
fi

echo "building bench_server and mcp_server (release, all features)..." >&2
cargo build --quiet --release --all-features --example bench_server --example mcp_server
target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
BIN="$target_dir/release/examples/bench_server"
MCP_BIN="$target_dir/release/examples/mcp_server"
[[ -x $BIN && -x $MCP_BIN ]] || { echo "no binaries in $target_dir/release/examples" >&2; exit 1; }
if [[ " $MODES " == *" mcp-auth "* ]] && ! [[ -d tests/e2e/node_modules/@modelcontextprotocol ]]; then
    echo "mcp-auth signs in with the MCP TypeScript SDK client: run 'npm ci' in tests/e2e first" >&2
    exit 1
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# POST a small JSON-RPC body; report totals in one parseable line.
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

declare -A TOKEN
for mode in $MODES; do
    case $mode in
        # The unprotected MCP server gets an RS256 bench token (ignored); mcp-auth gets its
        # token from a real sign-in each time it starts.
        mcp-*) TOKEN[$mode]=$("$BIN" --print-token bare) ;;
        *) TOKEN[$mode]=$("$BIN" --print-token "$mode") ;;
    esac
done

port=$PORT_BASE
# start_server MODE [WRAPPER...]: starts the server pinned to SERVER_CPU, waits until it answers.
start_server() {
    local mode=$1; shift
    port=$((port + 1))
    case $mode in
        mcp-noauth | mcp-auth)
            local args=(--bind "127.0.0.1:$port" --stateless)
            if [[ $mode == mcp-noauth ]]; then
                args+=(--insecure-no-auth --store memory)
            else
                # One SQLite file for every run: the signing key survives restarts.
                args+=(--store "sqlite:$work/mcp.db" --insecure-auto-approve)
            fi
            : >"$work/mcp.log"
            taskset -c "$SERVER_CPU" "$@" "$MCP_BIN" "${args[@]}" >>"$work/mcp.log" 2>&1 &
            server_pid=$!
            for _ in $(seq 1 600); do
                grep -q '^listening on' "$work/mcp.log" && break
                kill -0 "$server_pid" 2>/dev/null || break
                sleep 0.1
            done
            grep -q '^listening on' "$work/mcp.log" || { echo "mcp_server did not start:" >&2; cat "$work/mcp.log" >&2; exit 1; }
            if [[ $mode == mcp-auth ]]; then
                # A real sign-in (registration, authorization code with PKCE, token) by the
                # MCP TypeScript SDK client; it writes the access token it obtained to a file.
                rm -f "$work/secrets.json"
                node tests/e2e/mcp-client.mjs --secrets-file "$work/secrets.json" "http://127.0.0.1:$port/mcp" \
                    >"$work/client.json" 2>>"$work/client.log" || { echo "sign-in failed:" >&2; cat "$work/client.json" "$work/client.log" >&2; exit 1; }
                TOKEN[$mode]=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).accessToken)' "$work/secrets.json")
            fi
            ;;
        *)
            taskset -c "$SERVER_CPU" "$@" "$BIN" --mode "$mode" --bind "127.0.0.1:$port" \
                --exit-after $((DURATION + WARMUP + INSTR_DURATION + 120)) 2>>"$work/server.log" &
            server_pid=$!
            ;;
    esac
    local code=
    for _ in $(seq 1 600); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer ${TOKEN[$mode]}" \
            -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
            -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' \
            "http://127.0.0.1:$port/mcp" 2>/dev/null) || true
        [[ $code == 200 ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $mode did not answer 200 (last status: ${code:-none}); log:" >&2
    cat "$work/server.log" >&2
    exit 1
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# run_wrk MODE SECONDS CONNS: prints the RESULT line.
run_wrk() {
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$3" -d"$2"s -s "$work/post.lua" \
        -H "Authorization: Bearer ${TOKEN[$1]}" "http://127.0.0.1:$port/mcp" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }

declare -A RPS P50 P99
failed=0
start=$(date +%s)
# Other work on the machine shows up as noise (and p99 in the milliseconds): say how busy it is.
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        start_server "$mode"
        if ((WARMUP > 0)); then run_wrk "$mode" "$WARMUP" "$CONNS" >/dev/null; fi
        line=$(run_wrk "$mode" "$DURATION" "$CONNS")
        stop_server
        requests=$(field requests "$line"); us=$(field duration_us "$line")
        non2xx=$(field non2xx "$line"); errors=$(field errors "$line")
        rps=$(awk -v r="$requests" -v us="$us" 'BEGIN { printf "%.0f", r / (us / 1e6) }')
        RPS[$mode]+="$rps "; P50[$mode]+="$(field p50_us "$line") "; P99[$mode]+="$(field p99_us "$line") "
        printf 'round %d %-15s %8s req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %s  socket errors %s\n' \
            "$round" "$mode" "$rps" "$(awk -v u="$(field p50_us "$line")" 'BEGIN{print u/1000}')" \
            "$(awk -v u="$(field p99_us "$line")" 'BEGIN{print u/1000}')" "$non2xx" "$errors"
        if ((non2xx > 0 || errors > 0)); then failed=1; fi
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ratio A B: median over rounds of rps(A)/rps(B), each pair from the same round.
ratio() {
    [[ -n ${RPS[$1]:-} && -n ${RPS[$2]:-} ]] || { echo "n/a"; return; }
    paste <(tr ' ' '\n' <<<"${RPS[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[$2]}" | grep -v '^$') |
        awk '{ printf "%.4f\n", $1 / $2 }' | median | awk '{ printf "%.3f", $1 }'
}

echo
echo "medians over $ROUNDS rounds of ${DURATION}s (wrk -t1 -c$CONNS, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU):"
printf '%-15s %10s %9s %9s %14s\n' mode "req/s" "p50 ms" "p99 ms" "vs bare (axum 0.8)"
for mode in $MODES; do
    printf '%-15s %10.0f %9.2f %9.2f %14s\n' "$mode" "$(median <<<"${RPS[$mode]}")" \
        "$(median <<<"${P50[$mode]}" | awk '{print $1/1000}')" "$(median <<<"${P99[$mode]}" | awk '{print $1/1000}')" \
        "$(ratio "$mode" bare)"
done

declare -A INS
if [[ $INSTR == 1 ]]; then
    echo
    echo "instructions per request (callgrind over the server while wrk -c1 runs ${INSTR_DURATION}s; one run per mode):"
    for mode in $MODES; do
        out="$work/callgrind.$mode.out"
        start_server "$mode" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out"
        callgrind_control -i on "$server_pid" >/dev/null 2>&1
        line=$(run_wrk "$mode" "$INSTR_DURATION" 1)
        callgrind_control -i off "$server_pid" >/dev/null 2>&1
        stop_server
        requests=$(field requests "$line")
        total=$(grep -h '^totals:\|^summary:' "$out"* | awk '{ s += $2 } END { print s }')
        INS[$mode]=$(awk -v t="$total" -v r="$requests" 'BEGIN { printf "%.0f", t / r }')
        if [[ -n $PROFILES ]]; then mkdir -p "$PROFILES" && cat "$out"* >"$PROFILES/callgrind.$mode.out"; fi
        printf '%-15s %10s instructions/request  (%s requests)\n' "$mode" "${INS[$mode]}" "$requests"
    done
fi

echo
echo "took $(($(date +%s) - start)) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((failed)); then
    echo "some runs had non-2xx answers or socket errors: the figures above are not valid" >&2
    exit 1
fi
# The smallest of several ratios ("n/a" when none was measured).
least() { tr ' ' '\n' | grep -v '^n/a$' | grep -v '^$' | sort -g | head -1 | grep . || echo n/a; }
echo "per algorithm: cached_vs_bare rs256=$(ratio cached-rs256 bare) es256=$(ratio cached-es256 bare)" \
    "eddsa=$(ratio cached-eddsa bare); uncached_vs_raw rs256=$(ratio uncached-rs256 raw-rs256)" \
    "es256=$(ratio uncached-es256 raw-es256) eddsa=$(ratio uncached-eddsa raw-eddsa);" \
    "jwt_authorizer_vs_bare07=$(ratio jwt-authorizer bare07) bare07_vs_bare=$(ratio bare07 bare)"
echo "ratios: cached_vs_bare=$(echo "$(ratio cached-rs256 bare) $(ratio cached-es256 bare) $(ratio cached-eddsa bare)" | least)" \
    "uncached_vs_raw=$(echo "$(ratio uncached-rs256 raw-rs256) $(ratio uncached-es256 raw-es256) $(ratio uncached-eddsa raw-eddsa)" | least)" \
    "rs256_vs_jwt_authorizer=$(ratio uncached-rs256 jwt-authorizer) mcp_auth_vs_noauth=$(ratio mcp-auth mcp-noauth)"
