#!/usr/bin/env bash
# ops/bench.sh — what `make bench` does once bin/conveyor is built: Conveyor against
# its references, side by side in one run on one private redis-server (issue 2).
#
#   BIN=bin/conveyor ops/bench.sh
#
# (a) end-to-end noop jobs/s: BENCH_JOBS jobs preloaded (`conveyor enqueue --count`),
#     then one `conveyor worker` (CONVEYOR_CONCURRENCY=BENCH_CONCURRENCY) timed until
#     <prefix>:{default}:stats "succeeded" reaches BENCH_JOBS (polled every 20 ms);
#     reference: BullMQ 5 Queue.addBulk + one Worker, same concurrency, processor
#     `async () => {}`, default removeOnComplete (tests/bench/bullmq_bench.js).
# (b) POST /v1/jobs and (c) GET /v1/jobs/{id} (a succeeded job) with wrk (keep-alive,
#     BENCH_CONNS connections, BENCH_WRK_THREADS threads, BENCH_DURATION s) against
#     `conveyor api` with no worker running; reference: a bare civetweb handler
#     (tests/bench/bare.c) with the same number of threads and tcp_nodelay=1.
# (e) (issue 3) the GET of (c) authenticated with an admin user's API key, then with its
#     JWT access token (rate limits counted, set out of reach); reference: (c) with the
#     operator token (no rate limit).
# (f) (issue 4) BENCH_AI_JOBS ai.chat jobs preloaded, one worker with
#     CONVEYOR_CONCURRENCY=BENCH_AI_CONCURRENCY against bin/conveyor-test-provider
#     answering after BENCH_AI_LATENCY_MS; reference: the ideal, in-flight cap / latency.
#     Then the worker's VmRSS with SLEEP_JOBS calls in flight (provider latency 30 s).
# (d) worker VmRSS idle and with BENCH_SLEEP_JOBS `sleep` {"ms":30000} jobs in flight
#     (CONVEYOR_CONCURRENCY=BENCH_SLEEP_JOBS); reference: the BullMQ worker doing the
#     same (VmRSS of its node process).
# Prints a table (figure | conveyor | reference | ratio | target | verdict) and writes
# it to build/bench/results.md; logs go to build/bench/logs/. Exit status 0 when every
# figure was measured (whatever the verdicts), 1 otherwise.
#
# Settings (environment): BENCH_JOBS (100000), BENCH_ROUNDS (2: (a) runs BullMQ then
# Conveyor, and (b)(c)(e) Conveyor then bare civetweb, this many times and keeps the best
# rate of each, since the cores are shared and noisy), BENCH_CONCURRENCY (100), BENCH_CONNS (64), BENCH_WRK_THREADS (2),
# BENCH_DURATION (10), BENCH_API_THREADS (64: civetweb serves one keep-alive connection
# per thread, so fewer threads than connections leave connections waiting),
# BENCH_SLEEP_JOBS (1000), BENCH_PHASES ("a b c d e f": the phases to run; b, c and e
# run together), BENCH_SKIP_REFERENCES=1 (Conveyor only, for quick iterations; the
# table then has no ratios), BENCH_PERF=1 (perf record each timed phase's server process
# into build/bench/perf-*.data). Redis's per-command figures of each timed phase go to
# build/bench/logs/commandstats-*.txt.
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
cd "$ROOT"

BIN=${BIN:-bin/conveyor}
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
readonly BIN
readonly JOBS=${BENCH_JOBS:-100000}
readonly ROUNDS=${BENCH_ROUNDS:-2}
readonly CONCURRENCY=${BENCH_CONCURRENCY:-100}
readonly CONNS=${BENCH_CONNS:-64}
readonly WRK_THREADS=${BENCH_WRK_THREADS:-2}
readonly DURATION=${BENCH_DURATION:-10}
readonly API_THREADS=${BENCH_API_THREADS:-64}
readonly SLEEP_JOBS=${BENCH_SLEEP_JOBS:-1000}
readonly AI_JOBS=${BENCH_AI_JOBS:-2000}
readonly AI_CONCURRENCY=${BENCH_AI_CONCURRENCY:-100}
readonly AI_LATENCY_MS=${BENCH_AI_LATENCY_MS:-100}
PROVIDER_BIN=$(dirname "$BIN")/conveyor-test-provider
readonly PROVIDER_BIN
readonly PERF=${BENCH_PERF:-0}
readonly PHASES=${BENCH_PHASES:-a b c d e f}
readonly REF_SKIP=${BENCH_SKIP_REFERENCES:-}
readonly OUT=$ROOT/build/bench
readonly LOGS=$OUT/logs
readonly PHASE_TIMEOUT=300 # seconds for any one wait
readonly STALL_S=20        # (a) fails when no job finishes for this long (no scheduler runs)
readonly BENCH_DIR=$ROOT/tests/bench

TMP=''
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
RPORT='' PPORT='' APORT='' BPORT='' XPORT=''
declare -a PIDS=()       # background processes to stop on exit
declare -A R=()          # results by name
declare -a FAILED=()     # phases that could not be measured

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}
# phase_fail NAME WHY — record that a phase could not be measured; returns 1.
phase_fail() {
    say "phase $1 failed: $2"
    FAILED+=("$1: $2")
    return 1
}

# want PHASE — whether BENCH_PHASES asks for PHASE.
want() { [[ " $PHASES " == *" $1 "* ]]; }

# ---------------------------------------------------------------- processes

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# stop_pid PID [SECONDS] — SIGTERM, wait up to SECONDS (default 10), then SIGKILL;
# PID is no longer stopped on exit (so a reused pid is never signalled).
stop_pid() {
    local pid=$1 limit=${2:-10} i
    untrack "$pid"
    alive "$pid" || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        alive "$pid" || break
        # a reaped child is gone; an unreaped one lingers as a zombie
        [[ $(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

# track PID — stop PID on exit.  untrack PID — not any more.
track() { PIDS+=("$1"); }
untrack() {
    local p
    local -a keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# run_bg SECONDS OUT ERR CMD... — runs CMD for at most SECONDS, stdout to OUT, stderr
# to ERR, in the background so that a signal stops it at once; waits for it. Returns
# CMD's exit status.
run_bg() {
    local limit=$1 out=$2 err=$3 pid rc=0
    shift 3
    timeout "$limit" "$@" >"$out" 2>"$err" &
    pid=$!
    track "$pid"
    wait "$pid" || rc=$?
    untrack "$pid"
    return "$rc"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
    if [[ -n $TMP ]]; then
        ops/services.sh stop "$TMP" >/dev/null 2>&1 || say "could not stop services in $TMP"
        cp -f "$TMP"/redis/redis.log "$LOGS/" 2>/dev/null || true
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}

# now_us — wall clock in microseconds.
now_us() { local t=${EPOCHREALTIME/./}; printf '%s\n' "$((10#$t))"; }

# cpu_s PID — user+system CPU seconds of PID so far (two decimals).
cpu_s() {
    awk '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / 100 }' "/proc/$1/stat" 2>/dev/null ||
        echo 0
}

# rss_mib PID — VmRSS of PID in MiB (one decimal).
rss_mib() { awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"; }

# cpu_split WHO C0 C1 R0 R1 N UNIT — "WHO X us + redis Y us CPU per UNIT" from CPU
# seconds before/after (C: the process, R: redis-server) and N operations.
cpu_split() {
    awk -v who="$1" -v c0="$2" -v c1="$3" -v r0="$4" -v r1="$5" -v n="$6" -v unit="$7" \
        'BEGIN { printf "%s %.0f us + redis %.0f us CPU per %s\n", who, (c1 - c0) * 1e6 / n, (r1 - r0) * 1e6 / n, unit }'
}

# ---------------------------------------------------------------- Redis

rcli() { timeout 10 redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }

redis_cpu_s() {
    rcli info cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.2f\n", s }'
}

# stats_begin — zeroes Redis's per-command figures; prints its CPU seconds so far.
stats_begin() {
    rcli config resetstat >/dev/null
    redis_cpu_s
}

# commandstats — Redis's INFO commandstats (stdin) as a table, most time first.
commandstats() {
    tr -d '\r' | sed -n 's/^cmdstat_//p' | tr ':,=' '   ' |
        awk '{ printf "%-28s calls %10d  usec %12d  usec/call %8.2f\n", $1, $3, $5, $7 }' |
        sort -k5,5nr
}

# stats_end NAME — writes Redis's per-command figures since stats_begin to
# logs/commandstats-NAME.txt; prints Redis's CPU seconds so far.
stats_end() {
    rcli info commandstats | commandstats >"$LOGS/commandstats-$1.txt"
    redis_cpu_s
}

redis_pid() { rcli info server | tr -d '\r' | sed -n 's/^process_id://p'; }

flushdb() { [[ $(rcli flushdb) == OK ]] || die "FLUSHDB failed"; }

# wait_redis_count CMD KEY N — wait (PHASE_TIMEOUT) until `CMD KEY` answers >= N.
wait_redis_count() {
    local cmd=$1 key=$2 n=$3 deadline=$((SECONDS + PHASE_TIMEOUT)) v
    while ((SECONDS < deadline)); do
        v=$(rcli "$cmd" "$key" 2>/dev/null || echo 0)
        (( ${v:-0} >= n )) && return 0
        sleep 0.02
    done
    return 1
}

# perf_start NAME PID SECONDS — with BENCH_PERF=1, sample PID for SECONDS in the
# background into build/bench/perf-NAME.data.
perf_start() {
    ((PERF)) || return 0
    perf record -F 499 -g -p "$2" -o "$OUT/perf-$1.data" -- sleep "$3" \
        >"$LOGS/perf-$1.log" 2>&1 &
    track $!
}

# ---------------------------------------------------------------- conveyor

# conveyor PREFIX ARGS... — run bin/conveyor with the bench environment and PREFIX.
conveyor() {
    local prefix=$1
    shift
    CONVEYOR_REDIS_PREFIX=$prefix "$BIN" "$@"
}

# ---------------------------------------------------------------- (a) noop throughput

phase_noop_conveyor() {
    local prefix=cvb key t0 t1 v c1 r0 r1 pid poll fd deadline n rate cpu last moved why=
    say "(a) Conveyor: preloading $JOBS noop jobs"
    flushdb
    t0=$(now_us)
    run_bg 900 "$TMP/enqueue.out" "$LOGS/enqueue.log" \
        env CONVEYOR_REDIS_PREFIX=$prefix "$BIN" enqueue noop '{}' --count "$JOBS" ||
        { phase_fail a "conveyor enqueue --count failed (logs/enqueue.log)"; return 1; }
    t1=$(now_us)
    n=$(<"$TMP/enqueue.out")
    [[ $n == "$JOBS" ]] || { phase_fail a "enqueue printed '$n', not $JOBS"; return 1; }
    keep_best a_conv_preload "$(awk -v n="$JOBS" -v us=$((t1 - t0)) 'BEGIN { printf "%.0f", n / (us / 1e6) }')"
    v=$(rcli zcard "$prefix:{default}:ready")
    [[ $v == "$JOBS" ]] || { phase_fail a "ready holds $v jobs, not $JOBS"; return 1; }

    say "(a) Conveyor: 1 worker, concurrency $CONCURRENCY"
    key="$prefix:{default}:stats"
    exec {fd}< <(exec redis-cli -h 127.0.0.1 -p "$RPORT" -r -1 -i 0.02 hget "$key" succeeded)
    poll=$!
    track "$poll"
    r0=$(stats_begin)
    t0=$(now_us)
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_CONCURRENCY=$CONCURRENCY "$BIN" worker \
        >"$LOGS/worker-noop.log" 2>&1 &
    pid=$!
    track "$pid"
    perf_start worker-noop "$pid" 3
    perf_start redis-noop "$(redis_pid)" 3
    deadline=$((SECONDS + PHASE_TIMEOUT))
    t1='' last=-1 moved=$SECONDS
    while ((SECONDS < deadline)) && read -r -t 10 -u "$fd" v; do
        if (( ${v:-0} >= JOBS )); then
            t1=$(now_us)
            break
        fi
        alive "$pid" || break
        if [[ ${v:-0} != "$last" ]]; then
            last=${v:-0} moved=$SECONDS
        elif ((SECONDS - moved > STALL_S)); then
            why="stalled: no job finished for ${STALL_S}s, $(rcli zcard "$prefix:{default}:working") leased (ZCARD working), $(rcli zcard "$prefix:{default}:ready") ready"
            break
        fi
    done
    c1=$(cpu_s "$pid")
    r1=$(stats_end noop-conveyor)
    exec {fd}<&-
    stop_pid "$poll" 2
    stop_pid "$pid" 30
    [[ -n $t1 ]] || { phase_fail a "worker did not finish $JOBS jobs (succeeded=${v:-?}; ${why:+$why; }logs/worker-noop.log)"; return 1; }
    rate=$(awk -v n="$JOBS" -v us=$((t1 - t0)) 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    cpu=$(cpu_split worker 0 "$c1" "$r0" "$r1" "$JOBS" job)
    keep_best a_conv "$rate" "$cpu"
    say "(a) Conveyor: $rate jobs/s ($cpu)"
}

# keep_best NAME VALUE [CPU] — R[NAME] = VALUE (and R[NAME_cpu] = CPU) when VALUE is
# the highest so far (the best of BENCH_ROUNDS rounds).
keep_best() {
    if [[ -z ${R[$1]:-} ]] || (($2 > R[$1])); then
        R[$1]=$2
        [[ -z ${3:-} ]] || R[$1_cpu]=$3
    fi
}

phase_noop_bullmq() {
    local line r0 r1 rate cpu
    say "(a) BullMQ: $JOBS jobs, 1 Worker, concurrency $CONCURRENCY"
    flushdb
    r0=$(redis_cpu_s)
    if ! run_bg $((PHASE_TIMEOUT + 60)) "$TMP/bullmq.out" "$LOGS/bullmq-noop.log" \
        env BENCH_REDIS_PORT="$RPORT" BENCH_JOBS="$JOBS" BENCH_CONCURRENCY="$CONCURRENCY" \
        BENCH_COMMANDSTATS="$TMP/commandstats-bullmq" BENCH_TIMEOUT_S="$PHASE_TIMEOUT" \
        node "$BENCH_DIR/bullmq_bench.js" || ! line=$(grep '^BULLMQ ' "$TMP/bullmq.out"); then
        phase_fail a "bullmq_bench.js failed (logs/bullmq-noop.log)"
        return 1
    fi
    r1=$(redis_cpu_s)
    commandstats <"$TMP/commandstats-bullmq" >"$LOGS/commandstats-noop-bullmq.txt"
    rate=$(field rate "$line")
    cpu=$(cpu_split node 0 "$(field cpu_s "$line")" 0 "$(field redis_cpu_s "$line")" "$JOBS" job)
    keep_best a_bull "$rate" "$cpu"
    keep_best a_bull_preload "$(awk -v n="$JOBS" -v s="$(field preload_s "$line")" 'BEGIN { printf "%.0f", n / s }')"
    say "(a) BullMQ: $rate jobs/s ($cpu; whole run redis $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", b - a }') s)"
}

# field NAME LINE — the value of NAME=value in LINE.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<" $2"; }

# ---------------------------------------------------------------- (b), (c) HTTP

# wait_http URL — wait (30 s) until URL answers anything.
wait_http() {
    local deadline=$((SECONDS + 30))
    until curl -s -o /dev/null --max-time 2 "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# run_wrk NAME PID URL MODE — wrk against URL. R[NAME_rps|p50|p99|cpu] hold the run with
# the most requests/s of all rounds; R[NAME_err] adds up every round's errors.
run_wrk() {
    local name=$1 pid=$2 url=$3 mode=$4 line c0 c1 r0 r1 rps p50 p99 err cpu
    c0=$(cpu_s "$pid")
    r0=$(stats_begin)
    perf_start "$name" "$pid" $((DURATION > 3 ? DURATION - 2 : 1))
    [[ $name == *bare* ]] || perf_start "redis-$name" "$(redis_pid)" $((DURATION > 3 ? DURATION - 2 : 1))
    run_bg $((DURATION + 30)) "$LOGS/wrk-$name.log" "$LOGS/wrk-$name.err" \
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" -s "$BENCH_DIR/wrk_jobs.lua" "$url" \
        -- "$mode" || return 1
    line=$(grep '^WRK ' "$LOGS/wrk-$name.log") || return 1
    c1=$(cpu_s "$pid")
    r1=$(stats_end "$name")
    rps=$(printf '%.0f' "$(field rps "$line")")
    p50=$(awk -v u="$(field p50_us "$line")" 'BEGIN { printf "%.2f", u / 1000 }')
    p99=$(awk -v u="$(field p99_us "$line")" 'BEGIN { printf "%.2f", u / 1000 }')
    err=$(( $(field status_errors "$line") + $(field socket_errors "$line") ))
    cpu=$(cpu_split server "$c0" "$c1" "$r0" "$r1" "$(field requests "$line")" request)
    R[${name}_err]=$(( ${R[${name}_err]:-0} + err ))
    if [[ -z ${R[${name}_rps]:-} ]] || ((rps > R[${name}_rps])); then
        R[${name}_rps]=$rps R[${name}_p50]=$p50 R[${name}_p99]=$p99 R[${name}_cpu]=$cpu
    fi
    say "$name: $rps req/s p50 $p50 ms p99 $p99 ms, $err errors ($cpu)"
}

# bench_user_auth PID JOB_ID ROUND — (e) the GET of (c) with an API key and with a JWT access
# token of an admin user (who may read the operator's job): credential checks and the
# rate limiter (limits set out of reach, still counted) on every request.
bench_user_auth() {
    local api=$1 id=$2 user="bench-$$-$3" creds pw login jwt key saved=$BENCH_TOKEN
    creds=$(CONVEYOR_REDIS_PREFIX=cvb "$BIN" users create --email "$user@localhost" --admin \
        </dev/null 2>>"$LOGS/users.log") || { phase_fail e "conveyor users create failed"; return 0; }
    pw=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).password)' "$creds")
    login=$(printf '{"email":"%s@localhost","password":"%s"}' "$user" "$pw" |
        curl -s --max-time 5 -H 'Content-Type: application/json' --data-binary @- \
            "http://127.0.0.1:$APORT/v1/auth/login")
    jwt=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).accessToken || "")' "$login" 2>/dev/null) || jwt=''
    [[ -n $jwt ]] || { phase_fail e "login failed: ${login:0:200}"; return 0; }
    key=$(printf 'Authorization: Bearer %s\n' "$jwt" |
        curl -s --max-time 5 -H @- -H 'Content-Type: application/json' -d '{"name":"bench"}' \
            "http://127.0.0.1:$APORT/v1/auth/api-keys" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).key||""))' 2>/dev/null) || key=''
    [[ -n $key ]] || { phase_fail e "API key creation failed"; return 0; }
    # one request each first, as (c) had: the first use of a credential reads it from
    # PostgreSQL/Redis; the figure is the steady state
    printf 'Authorization: Bearer %s\n' "$key" | curl -s -o /dev/null -H @- "http://127.0.0.1:$APORT/v1/jobs/$id"
    printf 'Authorization: Bearer %s\n' "$jwt" | curl -s -o /dev/null -H @- "http://127.0.0.1:$APORT/v1/jobs/$id"
    BENCH_TOKEN=$key
    run_wrk e_key "$api" "http://127.0.0.1:$APORT/v1/jobs/$id" get ||
        phase_fail e "wrk GET with an API key failed (logs/wrk-e_key.log)"
    BENCH_TOKEN=$jwt
    run_wrk e_jwt "$api" "http://127.0.0.1:$APORT/v1/jobs/$id" get ||
        phase_fail e "wrk GET with a JWT failed (logs/wrk-e_jwt.log)"
    BENCH_TOKEN=$saved
}

# phase_http_conveyor ROUND — (b), (c) and (e) against one `conveyor api`.
phase_http_conveyor() {
    local prefix=cvb api id code body auth post_ok=1
    auth=$TMP/auth.header # curl -H @file: the token stays off command lines
    (umask 077 && printf 'Authorization: Bearer %s\n' "$CONVEYOR_OPERATOR_TOKEN" >"$auth")
    rcli config set latency-monitor-threshold 100 >/dev/null
    say "(b)(c) conveyor api on 127.0.0.1:$APORT, $API_THREADS threads, no worker running"
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_LISTEN=127.0.0.1:$APORT CONVEYOR_API_THREADS=$API_THREADS \
        CONVEYOR_RATE_LIMIT_USER=1000000000 CONVEYOR_RATE_LIMIT_API_KEY=1000000000 \
        "$BIN" api >"$LOGS/api.log" 2>&1 &
    api=$!
    track "$api"
    wait_http "http://127.0.0.1:$APORT/healthz" || { phase_fail bc "api does not answer (logs/api.log)"; return 1; }

    code=$(curl -s -o "$TMP/post.json" -w '%{http_code}' --max-time 5 -H "@$auth" \
        -H 'Content-Type: application/json' -d '{"type":"noop","input":{}}' \
        "http://127.0.0.1:$APORT/v1/jobs") || code=000
    [[ $code == 202 ]] || { post_ok=0; phase_fail b "POST /v1/jobs answered $code: $(head -c 300 "$TMP/post.json")"; }
    # a succeeded job from phase (a), else none
    id=$(rcli zrange "$prefix:done" 0 0)
    if [[ -n $id ]]; then
        code=$(curl -s -o "$TMP/get.json" -w '%{http_code}' --max-time 5 -H "@$auth" \
            "http://127.0.0.1:$APORT/v1/jobs/$id") || code=000
        body=$(head -c 300 "$TMP/get.json")
        [[ $code == 200 && $body == *'"succeeded"'* ]] ||
            { phase_fail c "GET /v1/jobs/$id answered $code: $body"; id=''; }
    else
        phase_fail c "no succeeded job in $prefix:done (phase a failed?)"
    fi

    if ((post_ok)); then
        run_wrk b_conv "$api" "http://127.0.0.1:$APORT/v1/jobs" post ||
            phase_fail b "wrk POST failed (logs/wrk-b_conv.log)"
    fi
    if [[ -n $id ]]; then
        run_wrk c_conv "$api" "http://127.0.0.1:$APORT/v1/jobs/$id" get ||
            phase_fail c "wrk GET failed (logs/wrk-c_conv.log)"
        bench_user_auth "$api" "$id" "$1"
    fi
    R[b_conv_jobs]=$(rcli zcard "$prefix:{default}:ready")
    { rcli slowlog get 20; rcli latency latest; rcli latency doctor; } >"$LOGS/slowlog-http.txt" 2>&1 || true
    stop_pid "$api" 30
}

phase_http_bare() {
    local bare
    say "(b)(c) bare civetweb on 127.0.0.1:$BPORT, $API_THREADS threads"
    "$OUT/bare" "$BPORT" "$API_THREADS" >"$LOGS/bare.log" 2>&1 &
    bare=$!
    track "$bare"
    wait_http "http://127.0.0.1:$BPORT/" || { phase_fail bc "bare server does not answer"; return 1; }
    run_wrk b_bare "$bare" "http://127.0.0.1:$BPORT/v1/jobs" post || phase_fail b "wrk POST (bare) failed"
    run_wrk c_bare "$bare" "http://127.0.0.1:$BPORT/v1/jobs/job_0000000000000000000000" get ||
        phase_fail c "wrk GET (bare) failed"
    stop_pid "$bare" 10
}

# ---------------------------------------------------------------- (d) RSS

phase_rss_conveyor() {
    local prefix=cvr pid n
    say "(d) Conveyor worker RSS: idle, then $SLEEP_JOBS sleep jobs in flight"
    flushdb
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_CONCURRENCY=$SLEEP_JOBS "$BIN" worker \
        >"$LOGS/worker-rss.log" 2>&1 &
    pid=$!
    track "$pid"
    sleep 2
    alive "$pid" || { phase_fail d "worker exited (logs/worker-rss.log)"; return 1; }
    R[d_conv_idle]=$(rss_mib "$pid")
    run_bg 120 "$TMP/enqueue.out" "$LOGS/enqueue-sleep.log" env CONVEYOR_REDIS_PREFIX=$prefix \
        "$BIN" enqueue sleep '{"ms":30000}' --count "$SLEEP_JOBS" || echo 0 >"$TMP/enqueue.out"
    n=$(<"$TMP/enqueue.out")
    [[ $n == "$SLEEP_JOBS" ]] || { stop_pid "$pid" 1; phase_fail d "enqueue of sleep jobs failed"; return 1; }
    if ! wait_redis_count zcard "$prefix:{default}:working" "$SLEEP_JOBS"; then
        stop_pid "$pid" 1
        phase_fail d "$SLEEP_JOBS jobs never ran at once"
        return 1
    fi
    sleep 0.5 # let the handlers settle into their timers
    R[d_conv_busy]=$(rss_mib "$pid")
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "(d) Conveyor worker: ${R[d_conv_idle]} MiB idle, ${R[d_conv_busy]} MiB busy"
}

phase_rss_bullmq() {
    local line
    say "(d) BullMQ worker RSS: idle, then $SLEEP_JOBS sleep jobs in flight"
    flushdb
    if ! run_bg 180 "$TMP/bullmq.out" "$LOGS/bullmq-rss.log" env BENCH_MODE=rss \
        BENCH_REDIS_PORT="$RPORT" BENCH_JOBS="$SLEEP_JOBS" BENCH_CONCURRENCY="$SLEEP_JOBS" \
        BENCH_TIMEOUT_S=120 node "$BENCH_DIR/bullmq_bench.js" ||
        ! line=$(grep '^BULLMQ_RSS ' "$TMP/bullmq.out"); then
        phase_fail d "bullmq_bench.js rss failed (logs/bullmq-rss.log)"
        return 1
    fi
    R[d_bull_idle]=$(field idle_mib "$line")
    R[d_bull_busy]=$(field busy_mib "$line")
    say "(d) BullMQ worker: ${R[d_bull_idle]} MiB idle, ${R[d_bull_busy]} MiB busy"
}

# ---------------------------------------------------------------- report

# ---------------------------------------------------------------- (f) AI calls

# ai_setup PREFIX LATENCY_MS — provider, catalog (published by an api) for PREFIX.
ai_setup() {
    local prefix=$1 lat=$2 api code
    flushdb
    "$PROVIDER_BIN" --port "$XPORT" --latency-ms "$lat" >"$LOGS/provider-$lat.log" 2>&1 &
    AI_PROVIDER=$!
    track "$AI_PROVIDER"
    printf '{"providers":[{"name":"bench","baseUrl":"http://127.0.0.1:%s/v1","timeoutMs":60000}],"models":[{"id":"bench-echo","name":"Bench","providers":["bench"],"maxTokens":4096}]}\n' \
        "$XPORT" >"$TMP/models.json"
    "$BIN" models load "$TMP/models.json" >"$LOGS/models.log" 2>&1 || return 1
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_LISTEN=127.0.0.1:$APORT "$BIN" api >"$LOGS/api-ai.log" 2>&1 &
    api=$!
    track "$api"
    wait_http "http://127.0.0.1:$APORT/healthz" || return 1
    # the api publishes the catalog the workers read when it first needs it
    code=$(printf 'Authorization: Bearer %s\n' "$CONVEYOR_OPERATOR_TOKEN" |
        curl -s -o "$TMP/ai.json" -w '%{http_code}' --max-time 5 -H @- -H 'Content-Type: application/json' \
            -H 'Prefer: respond-async' -d '{"model":"bench-echo","messages":[{"role":"user","content":"warm"}]}' \
            "http://127.0.0.1:$APORT/v1/chat/completions") || code=000
    stop_pid "$api" 10
    [[ $code == 202 ]] || { say "chat completion answered $code: $(head -c 300 "$TMP/ai.json")"; return 1; }
}

phase_ai() {
    local prefix=cva pid n t0 t1 v deadline fd poll ideal rate
    [[ -x $PROVIDER_BIN ]] || { phase_fail f "$PROVIDER_BIN is missing"; return 1; }
    say "(f) $AI_JOBS ai.chat jobs, 1 worker, $AI_CONCURRENCY in flight, provider latency ${AI_LATENCY_MS} ms"
    ai_setup "$prefix" "$AI_LATENCY_MS" || { phase_fail f "AI set-up failed (logs/api-ai.log, logs/models.log)"; return 1; }
    run_bg 120 "$TMP/enqueue.out" "$LOGS/enqueue-ai.log" env CONVEYOR_REDIS_PREFIX=$prefix \
        "$BIN" enqueue ai.chat '{"model":"bench-echo","request":{"messages":[{"role":"user","content":"hello there"}]}}' \
        --count "$AI_JOBS" || echo 0 >"$TMP/enqueue.out"
    n=$(<"$TMP/enqueue.out")
    [[ $n == "$AI_JOBS" ]] || { stop_pid "$AI_PROVIDER" 2; phase_fail f "enqueue of ai.chat jobs failed"; return 1; }
    exec {fd}< <(exec redis-cli -h 127.0.0.1 -p "$RPORT" -r -1 -i 0.02 hget "$prefix:{default}:stats" succeeded)
    poll=$!
    track "$poll"
    t0=$(now_us)
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_CONCURRENCY=$AI_CONCURRENCY "$BIN" worker \
        >"$LOGS/worker-ai.log" 2>&1 &
    pid=$!
    track "$pid"
    deadline=$((SECONDS + PHASE_TIMEOUT)) t1=''
    # the warm-up job counts too
    while ((SECONDS < deadline)) && read -r -t 10 -u "$fd" v; do
        if (( ${v:-0} >= AI_JOBS + 1 )); then t1=$(now_us); break; fi
        alive "$pid" || break
    done
    exec {fd}<&-
    stop_pid "$poll" 2
    stop_pid "$pid" 30
    stop_pid "$AI_PROVIDER" 5
    [[ -n $t1 ]] || { phase_fail f "the worker did not finish $AI_JOBS ai.chat jobs (succeeded=${v:-?}; logs/worker-ai.log)"; return 1; }
    rate=$(awk -v n="$AI_JOBS" -v us=$((t1 - t0)) 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    ideal=$(awk -v c="$AI_CONCURRENCY" -v ms="$AI_LATENCY_MS" 'BEGIN { printf "%.0f", c * 1000 / ms }')
    R[f_rate]=$rate R[f_ideal]=$ideal
    say "(f) $rate ai.chat jobs/s (ideal $ideal)"

    say "(f) worker RSS with $SLEEP_JOBS provider calls in flight"
    prefix=cvs
    ai_setup "$prefix" 30000 || { phase_fail f "AI set-up failed"; return 1; }
    CONVEYOR_REDIS_PREFIX=$prefix CONVEYOR_CONCURRENCY=$SLEEP_JOBS "$BIN" worker \
        >"$LOGS/worker-ai-rss.log" 2>&1 &
    pid=$!
    track "$pid"
    run_bg 120 "$TMP/enqueue.out" "$LOGS/enqueue-ai2.log" env CONVEYOR_REDIS_PREFIX=$prefix \
        "$BIN" enqueue ai.chat '{"model":"bench-echo","request":{"messages":[{"role":"user","content":"hold"}]}}' \
        --count "$SLEEP_JOBS" || echo 0 >"$TMP/enqueue.out"
    if wait_redis_count zcard "$prefix:{default}:working" "$SLEEP_JOBS"; then
        sleep 2 # the calls reach the provider
        v=$(curl -s --max-time 5 "http://127.0.0.1:$XPORT/_stats" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(String(JSON.parse(s).inFlight)))' 2>/dev/null) || v='?'
        R[f_rss]=$(rss_mib "$pid") R[f_inflight]=$v
        say "(f) worker: ${R[f_rss]} MiB with $v calls in flight at the provider"
    else
        phase_fail f "$SLEEP_JOBS ai.chat jobs never ran at once"
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    stop_pid "$AI_PROVIDER" 5
}

# row FIGURE CONV REF TARGET_RATIO HIGHER_IS_BETTER — one table row; TARGET_RATIO '-' for
# information only.
declare -a ROWS=()
row() {
    local fig=$1 conv=${2:-} ref=${3:-} target=$4 ratio='-' verdict
    if [[ -z $conv || -z $ref ]]; then
        ROWS+=("$fig|${conv:-n/a}|${ref:-n/a}|-|${target/#[0-9]*/>= ${target}x}|NOT MEASURED")
        return
    fi
    ratio=$(awk -v a="$conv" -v b="$ref" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    if [[ $target == - ]]; then
        verdict=info
    elif awk -v a="$conv" -v b="$ref" -v t="$target" 'BEGIN { exit !(b > 0 && a / b >= t) }'; then
        verdict=PASS
    else
        verdict=MISS
    fi
    [[ $target == - ]] || target=">= ${target}x"
    ROWS+=("$fig|$conv|$ref|$ratio|$target|$verdict")
}

# pair NAME — "p50 / p99" of a wrk run, or n/a.
pair() {
    if [[ -n ${R[$1_p50]:-} ]]; then printf '%s / %s\n' "${R[$1_p50]}" "${R[$1_p99]}"; else echo n/a; fi
}

# align_table — "a|b|c" lines (the second one: "-" or "-:" per column) into a
# Markdown table whose columns line up.
align_table() {
    awk -F'|' '
        { n = NR; cols = NF; for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
        END {
            for (r = 1; r <= n; r++) {
                line = "|"
                for (i = 1; i <= cols; i++) {
                    v = c[r, i]
                    if (r == 2) {
                        d = sprintf("%*s", w[i], ""); gsub(/ /, "-", d)
                        if (v ~ /:$/) d = substr(d, 2) ":"
                        line = line " " d " |"
                    } else if (r > 2 && i >= 2 && i <= 4) {
                        line = line " " sprintf("%*s", w[i], v) " |"
                    } else {
                        line = line " " sprintf("%-*s", w[i], v) " |"
                    }
                }
                print line
            }
        }'
}

report() {
    local md=$OUT/results.md r errs=''
    row "(a) noop jobs/s vs BullMQ (1 worker, concurrency $CONCURRENCY)" "${R[a_conv]:-}" "${R[a_bull]:-}" 3
    row "(b) POST /v1/jobs req/s vs bare civetweb" "${R[b_conv_rps]:-}" "${R[b_bare_rps]:-}" 0.5
    ROWS+=("(b) POST p50 / p99 ms|$(pair b_conv)|$(pair b_bare)|-|-|info")
    row "(c) GET /v1/jobs/{id} req/s vs bare civetweb" "${R[c_conv_rps]:-}" "${R[c_bare_rps]:-}" 0.7
    ROWS+=("(c) GET p50 / p99 ms|$(pair c_conv)|$(pair c_bare)|-|-|info")
    row "(e) GET /v1/jobs/{id} with an API key vs (c) operator token" "${R[e_key_rps]:-}" "${R[c_conv_rps]:-}" 0.8
    row "(e) GET /v1/jobs/{id} with a JWT vs (c) operator token" "${R[e_jwt_rps]:-}" "${R[c_conv_rps]:-}" 0.8
    ROWS+=("(e) GET p50 / p99 ms, API key / JWT|$(pair e_key)|$(pair e_jwt)|-|-|info")
    row "(f) ai.chat jobs/s vs ideal ($AI_CONCURRENCY in flight / ${AI_LATENCY_MS} ms)" "${R[f_rate]:-}" "${R[f_ideal]:-}" 0.8
    ROWS+=("(f) worker RSS MiB, ${R[f_inflight]:-?} provider calls in flight|${R[f_rss]:-n/a}|-|-|-|info")
    row "(d) worker RSS MiB idle vs BullMQ worker" "${R[d_conv_idle]:-}" "${R[d_bull_idle]:-}" -
    row "(d) worker RSS MiB, $SLEEP_JOBS jobs in flight" "${R[d_conv_busy]:-}" "${R[d_bull_busy]:-}" -
    row "preload jobs/s (enqueue --count vs addBulk)" \
        "${R[a_conv_preload]:-}" "${R[a_bull_preload]:-}" -
    for r in b_conv c_conv b_bare c_bare e_key e_jwt; do
        [[ ${R[${r}_err]:-0} == 0 ]] || errs+=" $r: ${R[${r}_err]} error answers/socket errors;"
    done
    {
        printf '# make bench — %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
        printf 'Machine: %s cores (%s), shared by wrk, the server under test, Redis and the\n' \
            "$(nproc)" "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        printf 'clients; all on 127.0.0.1. redis-server %s (no AOF, no RDB), one instance for\n' \
            "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
        printf 'every phase, FLUSHDB between phases. Load average at the start %s, at the end\n' \
            "$LOAD0"
        printf '%s (other programs on the machine compete for the same cores).\n' \
            "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'BullMQ %s on node %s.\n\n' \
            "$(node -p 'require(process.argv[1]).version' "$BENCH_DIR/node_modules/bullmq/package.json" 2>/dev/null || echo '?')" \
            "$(node --version)"
        {
            printf 'figure|conveyor|reference|ratio|target|verdict\n'
            printf -- '-|-:|-:|-:|-|-\n'
            printf '%s\n' "${ROWS[@]}"
        } | align_table
        printf '\nNotes:\n'
        cat <<NOTES
- conveyor runs with CONVEYOR_LOG_LEVEL=warn (no per-request or per-job info lines).
- (a) best of $ROUNDS rounds (BullMQ, then Conveyor, in each round). $JOBS noop jobs
  preloaded, then timed from the worker's start to the last completion (Conveyor:
  stats "succeeded" polled every 20 ms; BullMQ: the Worker's 'completed' events).
  BullMQ keeps its default removeOnComplete (completed jobs stay in Redis), as Conveyor
  keeps finished jobs until they are archived. No scheduler runs.
  CPU in the best rounds: Conveyor ${R[a_conv_cpu]:-n/a};
  BullMQ ${R[a_bull_cpu]:-n/a}.
- (b)(c)(e) best of $ROUNDS rounds (conveyor api, then bare civetweb, in each round;
  p50/p99 and CPU are those of the best run). wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s,
  keep-alive. conveyor api with CONVEYOR_API_THREADS=$API_THREADS and no worker running
  (the POSTed jobs pile up: ${R[b_conv_jobs]:-?} queued after the last round); GET
  reads one succeeded job from (a). Bare civetweb: num_threads=$API_THREADS,
  tcp_nodelay=1, 200 with a 54-byte JSON body.
  CPU: POST api ${R[b_conv_cpu]:-n/a}; bare ${R[b_bare_cpu]:-n/a}.
  GET api ${R[c_conv_cpu]:-n/a}; bare ${R[c_bare_cpu]:-n/a}.
- (d) VmRSS from /proc/PID/status, CONVEYOR_CONCURRENCY=$SLEEP_JOBS; "in flight" once
  ZCARD working = $SLEEP_JOBS (BullMQ: $SLEEP_JOBS 'active' events; its Queue client
  lives in the same process).
- Redis per-command figures of each timed phase: build/bench/logs/commandstats-*.txt.
NOTES
        [[ -z $errs ]] || printf -- '- ERRORS:%s\n' "$errs"
        if ((${#FAILED[@]})); then
            printf -- '- NOT MEASURED:\n'
            for r in "${FAILED[@]}"; do printf '  - %s\n' "$r"; done
        fi
    } >"$md"
    printf '\n'
    cat "$md"
    printf '\n(written to %s)\n' "${md#"$ROOT"/}"
}

# ---------------------------------------------------------------- main

main() {
    [[ -x $BIN ]] || die "$BIN not built (make)"
    local tool
    for tool in wrk node curl redis-server redis-cli cc; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run ops/deps.sh --bench"
    done
    [[ -d $BENCH_DIR/node_modules/bullmq ]] || die "bullmq not installed: run ops/deps.sh --bench"
    mkdir -p "$OUT" "$LOGS"
    rm -f "$LOGS"/*
    cc -O2 -std=c11 -Wall -Wextra -Werror -o "$OUT/bare" "$BENCH_DIR/bare.c" -lcivetweb ||
        die "cannot build tests/bench/bare.c"

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    TMP=$(mktemp -d /tmp/cvbench.XXXXXX)
    local -a ports
    mapfile -t ports < <(ops/freeport.sh 5)
    ((${#ports[@]} == 5)) || die "ops/freeport.sh found no free ports"
    RPORT=${ports[0]} PPORT=${ports[1]} APORT=${ports[2]} BPORT=${ports[3]} XPORT=${ports[4]}
    ops/services.sh start "$TMP" "$RPORT" "$PPORT" --fast 2>"$LOGS/services.log" ||
        die "services did not start (build/bench/logs/services.log)"
    set -a
    # shellcheck source=/dev/null
    . "$TMP/env"
    set +a
    CONVEYOR_OPERATOR_TOKEN=$(openssl rand -hex 24)
    BENCH_TOKEN=$CONVEYOR_OPERATOR_TOKEN # for wrk_jobs.lua; never on a command line
    CONVEYOR_JWT_SECRET=$(openssl rand -hex 32)
    export CONVEYOR_OPERATOR_TOKEN CONVEYOR_JWT_SECRET BENCH_TOKEN CONVEYOR_LOG_LEVEL=warn
    timeout 60 "$BIN" migrate >"$LOGS/migrate.log" 2>&1 || die "conveyor migrate failed (build/bench/logs/migrate.log)"
    say "Redis 127.0.0.1:$RPORT, PostgreSQL on a unix socket (port $PPORT); $(nproc) cores shared by everything"

    local round
    if want a; then
        for ((round = 1; round <= ROUNDS; round++)); do
            say "(a) round $round of $ROUNDS"
            [[ -n $REF_SKIP ]] || phase_noop_bullmq || true
            phase_noop_conveyor || true
        done
    fi
    if want b || want c || want e; then
        for ((round = 1; round <= ROUNDS; round++)); do
            say "(b)(c)(e) round $round of $ROUNDS"
            phase_http_conveyor "$round" || true
            [[ -n $REF_SKIP ]] || phase_http_bare || true
        done
    fi
    if want d; then
        phase_rss_conveyor || true
        [[ -n $REF_SKIP ]] || phase_rss_bullmq || true
    fi
    ! want f || phase_ai || true
    report
    ((${#FAILED[@]} == 0))
}

main "$@"
