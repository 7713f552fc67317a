#!/usr/bin/env bash
# ops/run.sh — what `make run` does once bin/conveyor is built: private Redis and
# PostgreSQL in ./var, then `conveyor migrate`, then api + worker + scheduler in
# the background until Ctrl-C (or until one of them dies: exit 1).
#
# Env (all optional):
#   CONVEYOR_VAR              state directory             (default: ./var)
#   CONVEYOR_BIN              the conveyor binary         (default: bin/conveyor)
#   CONVEYOR_RUN_REDIS_PORT   Redis port                  (default: 16379)
#   CONVEYOR_RUN_PG_PORT      PostgreSQL socket's port    (default: 15432; no TCP listener)
#   CONVEYOR_LISTEN           API address, loopback only  (default: 127.0.0.1:8080)
#   CONVEYOR_RUN_PROVIDER_PORT  the local OpenAI-compatible test provider (default: 18091)
# Files: var/operator_token, var/jwt_secret, var/admin_credentials (0600, created once),
#        var/log/{api,worker,scheduler,provider}.log
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT

# abs PATH — PATH made absolute against the caller's working directory.
abs() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }

VAR=$(abs "${CONVEYOR_VAR:-$ROOT/var}")
BIN=$(abs "${CONVEYOR_BIN:-$ROOT/bin/conveyor}")
cd "$ROOT"
REDIS_PORT=${CONVEYOR_RUN_REDIS_PORT:-16379}
PG_PORT=${CONVEYOR_RUN_PG_PORT:-15432}
CONVEYOR_LISTEN=${CONVEYOR_LISTEN:-127.0.0.1:8080}
readonly VAR BIN REDIS_PORT PG_PORT
readonly LOGDIR=$VAR/log
readonly PIDS_FILE=$VAR/run.pids # "PID PROGRAM" of each process started (see watch)
readonly PROCS=(api worker scheduler)
PROVIDER_BIN=$(dirname "$BIN")/conveyor-test-provider
PROVIDER_PORT=${CONVEYOR_RUN_PROVIDER_PORT:-18091}
readonly PROVIDER_BIN PROVIDER_PORT
readonly HEALTH_TIMEOUT=20
readonly STOP_TIMEOUT=30

declare -A PID=() # process name -> pid
SERVICES_UP=0
CLEANING=0
STOPPING=0
HUNG_UP=0

# Messages never fail the script (the terminal may be gone: see cleanup).
say() { printf 'run: %s\n' "$*" 2>/dev/null || :; }
err() { printf 'run: %s\n' "$*" >&2 2>/dev/null || :; }
die() {
    err "error: $*"
    exit 1
}

# pid_alive PID — exists and is not a zombie.
pid_alive() {
    local state
    state=$(awk '/^State:/ { print $2; exit }' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

show_log_tail() {
    local name=$1
    err "last lines of $LOGDIR/$name.log:"
    tail -n 30 "$LOGDIR/$name.log" >&2 || true
}

# ---------------------------------------------------------------- shutdown

stop_processes() {
    local name deadline=$((SECONDS + STOP_TIMEOUT))
    local -a alive
    for name in "${!PID[@]}"; do
        kill -TERM "${PID[$name]}" 2>/dev/null || true
    done
    while :; do
        alive=()
        for name in "${!PID[@]}"; do
            pid_alive "${PID[$name]}" && alive+=("$name")
        done
        ((${#alive[@]} > 0)) || break
        if ((SECONDS >= deadline)); then
            err "still running after ${STOP_TIMEOUT}s, killing: ${alive[*]}"
            for name in "${alive[@]}"; do kill -KILL "${PID[$name]}" 2>/dev/null || true; done
            break
        fi
        sleep 0.2
    done
    for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null || true; done
    PID=()
}

# on_stop SIGNAL CODE — the first signal that stops the run exits with CODE (the EXIT
# trap cleans up). A later one is ignored, so that it cannot cut the cleanup short: a
# closed terminal sends SIGHUP twice (the shell hangs up its jobs, then the kernel hangs
# up the terminal's foreground job as the shell exits).
on_stop() {
    ((STOPPING)) && return
    STOPPING=1
    [[ $1 == HUP ]] && HUNG_UP=1
    exit "$2"
}

cleanup() {
    local rc=$?
    ((CLEANING)) && return
    CLEANING=1
    trap '' INT TERM HUP
    set +e # stop everything that can be stopped, whatever fails on the way
    # The terminal is gone: what is said goes to a log (writes to it would fail, and a
    # failing write must not end the cleanup before the servers are stopped).
    ((HUNG_UP)) && exec >>"$LOGDIR/run.log" 2>&1
    if ((${#PID[@]} > 0)); then
        say "stopping ${!PID[*]} ..."
        stop_processes
    fi
    if ((SERVICES_UP)); then
        "$ROOT/ops/services.sh" stop "$VAR" || rc=1
    fi
    say "stopped"
    exit "$rc"
}

# ---------------------------------------------------------------- startup

# ensure_secret FILE PREFIX BYTES — FILE (0600) holding PREFIX + BYTES random bytes in
# hex, created once; prints its content.
ensure_secret() {
    local f=$1 hex
    if [[ ! -s $f ]]; then
        if command -v openssl >/dev/null 2>&1; then
            hex=$(openssl rand -hex "$3")
        else
            hex=$(od -An -tx1 -N"$3" /dev/urandom | tr -d ' \n')
        fi
        (umask 077 && printf '%s%s\n' "$2" "$hex" >"$f.tmp")
        mv -f "$f.tmp" "$f"
    fi
    chmod 600 "$f"
    cat "$f"
}

ensure_secrets() {
    CONVEYOR_OPERATOR_TOKEN=$(ensure_secret "$VAR/operator_token" op_ 24)
    CONVEYOR_JWT_SECRET=$(ensure_secret "$VAR/jwt_secret" '' 32)
    export CONVEYOR_OPERATOR_TOKEN CONVEYOR_JWT_SECRET
}

# ensure_admin — the local admin account, created once; its credentials are kept in
# var/admin_credentials (0600).
ensure_admin() {
    local f=$VAR/admin_credentials out
    [[ -s $f ]] && return 0
    if ! out=$("$BIN" users create --email admin@localhost --admin --name Admin </dev/null); then
        err "could not create admin@localhost (it may exist from an earlier run whose"
        err "$f was removed): create another with: $BIN users create --email E --admin"
        return 0
    fi
    (umask 077 && printf '%s\n' "$out" >"$f.tmp")
    mv -f "$f.tmp" "$f"
}

# in_background CMD... — CMD in the background, deaf to the terminal's hang-up: closing
# the terminal makes this script stop it with SIGTERM, cleanly (see main).
in_background() { (trap '' HUP && exec "$@") & }

start_process() {
    local name=$1 log=$LOGDIR/$1.log
    printf '==== %s: conveyor %s starting\n' "$(date '+%F %T')" "$name" >>"$log"
    in_background "$BIN" "$name" </dev/null >>"$log" 2>&1
    PID[$name]=$!
    echo "$! $BIN" >>"$PIDS_FILE"
}

# start_provider — the OpenAI-compatible test provider the seed models point at, so
# that AI calls work offline (50 ms per answer).
start_provider() {
    local log=$LOGDIR/provider.log
    if [[ ! -x $PROVIDER_BIN ]]; then
        err "$PROVIDER_BIN is missing: AI calls have no local provider"
        return 0
    fi
    port_in_use 127.0.0.1 "$PROVIDER_PORT" &&
        die "127.0.0.1:$PROVIDER_PORT (the test provider) is already in use"
    printf '==== %s: test provider starting\n' "$(date '+%F %T')" >>"$log"
    in_background "$PROVIDER_BIN" --port "$PROVIDER_PORT" --latency-ms 50 </dev/null >>"$log" 2>&1
    PID[provider]=$!
    echo "$! $PROVIDER_BIN" >>"$PIDS_FILE"
}

# load_models — the seed providers and models (ops/models.json), once: later edits made
# with `conveyor models load` are kept.
load_models() {
    [[ -e $VAR/models_loaded ]] && return 0
    sed "s#http://127.0.0.1:18091/v1#http://127.0.0.1:$PROVIDER_PORT/v1#" \
        "$ROOT/ops/models.json" >"$VAR/models.json"
    "$BIN" models load "$VAR/models.json" </dev/null >/dev/null || die "conveyor models load failed"
    : >"$VAR/models_loaded"
}

wait_healthy() {
    local url=http://$CONVEYOR_LISTEN/healthz deadline=$((SECONDS + HEALTH_TIMEOUT))
    until curl -fsS --max-time 2 "$url" >/dev/null 2>&1; do
        if ! pid_alive "${PID[api]}"; then
            show_log_tail api
            die "the api exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail api
            die "$url did not answer within ${HEALTH_TIMEOUT}s"
        fi
        sleep 0.25
    done
}

banner() {
    local base=http://$CONVEYOR_LISTEN
    cat <<EOF

  Conveyor is running on $base
  (Redis 127.0.0.1:$REDIS_PORT, PostgreSQL on a private unix socket only; data in $VAR)

  Operator token (also in $VAR/operator_token):
    TOKEN=$CONVEYOR_OPERATOR_TOKEN
  Admin account (also in $VAR/admin_credentials):
    $(cat "$VAR/admin_credentials" 2>/dev/null || echo "none")
  Sign in:
    curl -s -X POST $base/v1/auth/login -H 'Content-Type: application/json' -d '{"email":"admin@localhost","password":"..."}'

  Try:
    curl -s -X POST $base/v1/jobs -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{"type":"noop","input":{}}'

  AI (the local test provider on 127.0.0.1:$PROVIDER_PORT answers as gpt-4, gpt-3.5-turbo, test-echo):
    curl -s -X POST $base/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{"model":"gpt-4","messages":[{"role":"user","content":"hello"}]}'

  Logs: $LOGDIR/api.log  $LOGDIR/worker.log  $LOGDIR/scheduler.log  $LOGDIR/provider.log
  Ctrl-C stops everything.

EOF
}

# supervise — wait; if any process exits, report it and stop everything.
supervise() {
    local done_pid name rc
    while :; do
        done_pid='' rc=0
        wait -n -p done_pid "${PID[@]}" || rc=$?
        [[ -n $done_pid ]] || continue
        for name in "${!PID[@]}"; do
            [[ ${PID[$name]} == "$done_pid" ]] || continue
            unset "PID[$name]"
            err "conveyor $name exited unexpectedly (status $rc)"
            show_log_tail "$name"
            exit 1
        done
    done
}

# watch — a process that outlives this script, deaf to the terminal's signals: once the
# script is gone, however it ended (its cleanup cut short, or killed), it stops what the
# script started: the processes in PIDS_FILE still running that program, then the
# servers. After a normal cleanup nothing is left and it has nothing to do.
watch() {
    local me=$$
    ( ( # not a child of this script (whose waits would then wait for it too)
        trap '' HUP INT TERM
        exec </dev/null >>"$LOGDIR/run.log" 2>&1
        while kill -0 "$me" 2>/dev/null; do sleep 0.5; done
        local pid prog left=() deadline
        if [[ -s $PIDS_FILE ]]; then
            while read -r pid prog; do
                [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$prog")" ]] || continue
                kill -TERM "$pid" 2>/dev/null && left+=("$pid")
            done <"$PIDS_FILE"
            deadline=$((SECONDS + STOP_TIMEOUT))
            for pid in "${left[@]}"; do
                while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
                pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
            done
            ((${#left[@]} == 0)) || echo "run: stopped what the script left: ${left[*]}"
        fi
        rm -f "$PIDS_FILE"
        "$ROOT/ops/services.sh" stop "$VAR"
    ) & )
}

main() {
    [[ -x $BIN ]] || die "$BIN is missing or not executable (build it with make)"
    local host=${CONVEYOR_LISTEN%:*} port=${CONVEYOR_LISTEN##*:}
    [[ $host =~ ^127\. || $host == localhost ]] ||
        die "CONVEYOR_LISTEN=$CONVEYOR_LISTEN: make run listens on loopback only"
    [[ $host == localhost ]] && host=127.0.0.1
    port_in_use "$host" "$port" &&
        die "$CONVEYOR_LISTEN is already in use (another make run?)"
    export CONVEYOR_LISTEN

    mkdir -p "$LOGDIR"
    trap cleanup EXIT
    trap 'on_stop INT 0' INT # Ctrl-C is how one stops it: not a failure
    trap 'on_stop TERM 143' TERM
    trap 'on_stop HUP 129' HUP # the terminal closed: stop everything all the same

    : >"$PIDS_FILE"
    watch
    SERVICES_UP=1
    "$ROOT/ops/services.sh" start "$VAR" "$REDIS_PORT" "$PG_PORT"
    set -a
    # shellcheck source=/dev/null
    . "$VAR/env"
    set +a
    ensure_secrets

    say "migrating the database"
    "$BIN" migrate </dev/null || die "conveyor migrate failed"
    ensure_admin
    load_models

    local name
    start_provider
    for name in "${PROCS[@]}"; do start_process "$name"; done
    wait_healthy
    banner
    supervise
}

main "$@"
