#!/usr/bin/env bash
# ops/check.sh — what `make check` does once everything is built.
#
#   ops/check.sh [BIN=path] [UNIT_TESTS="t1 t2 ..."] [SAN=0|1]
# (the same three may come from the environment instead)
#   BIN         the conveyor binary (default bin/conveyor), exported to the
#               tests as CONVEYOR_BIN (absolute path)
#   UNIT_TESTS  cmocka test binaries, run one by one (timeout 120 s each)
#   SAN         1 when built with sanitizers (informational)
#
# Starts a throw-away Redis + PostgreSQL (ops/services.sh --fast) in
# /tmp/cvchk.XXXXXX, runs the unit tests, then tests/integration/*.test.js with
# `node --test` (timeout 1500 s), and ends with the line "N passed, N failed".
# CHECK_TESTS="scripts jobs_basic" runs only those integration files (not for CI).
# Exit status 1 when a test failed or when no test ran at all.
# Tests get CONVEYOR_REDIS_URL, CONVEYOR_DATABASE_URL, CONVEYOR_BIN, CONVEYOR_TEST_PROVIDER,
# CONVEYOR_CHECK_TMP (a scratch directory), CONVEYOR_CHECK_REDIS_PORT,
# CONVEYOR_CHECK_PG_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly UNIT_TIMEOUT=120
readonly INTEGRATION_TIMEOUT=1500

TMP=
UNIT_PATHS=() # UNIT_TESTS, absolute
GROUP= # process group of the test command running now
TAIL_PID=
PASSED=0
FAILED=0

say() { printf '%s\n' "$*"; }
header() { printf '\n==== %s\n' "$*"; }
die() {
    printf 'check: error: %s\n' "$*" >&2
    exit 1
}

# abs PATH — PATH made absolute against the caller's working directory.
abs() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
    esac
}

parse_args() {
    local arg
    for arg in "$@"; do
        case $arg in
        BIN=*) BIN=${arg#BIN=} ;;
        UNIT_TESTS=*) UNIT_TESTS=${arg#UNIT_TESTS=} ;;
        SAN=*) SAN=${arg#SAN=} ;;
        -h | --help)
            sed -n '2,17p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument: $arg" ;;
        esac
    done
    BIN=$(abs "${BIN:-bin/conveyor}")
    SAN=${SAN:-0}
    local -a tests
    local t
    read -r -a tests <<<"${UNIT_TESTS:-}"
    for t in "${tests[@]}"; do UNIT_PATHS+=("$(abs "$t")"); done
}

# ---------------------------------------------------------------- cleanup

kill_group() {
    [[ -n $GROUP ]] || return 0
    kill -TERM -- "-$GROUP" 2>/dev/null || kill -TERM "$GROUP" 2>/dev/null || true
    sleep 0.2
    kill -KILL -- "-$GROUP" 2>/dev/null || true
    GROUP=
}

cleanup() {
    local rc=$?
    trap '' INT TERM
    kill_group
    if [[ -n $TAIL_PID ]]; then kill "$TAIL_PID" 2>/dev/null || true; fi
    if [[ -n $TMP ]]; then
        # quiet unless it fails: the summary must stay the last line
        local out
        if ! out=$("$ROOT/ops/services.sh" stop "$TMP" 2>&1); then
            printf '%s\n' "$out" >&2
            rc=1
        fi
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}

# ---------------------------------------------------------------- helpers

# run_logged OUT SECONDS CMD... — run CMD under `timeout` in its own process
# group (timeout makes one), output to OUT and streamed to our stdout; kill
# whatever the command left behind in that group. Returns CMD's status.
run_logged() {
    local out=$1 secs=$2 rc=0
    shift 2
    : >"$out"
    timeout -k 10 "$secs" "$@" </dev/null >"$out" 2>&1 &
    GROUP=$!
    tail -n +1 -s 0.1 -f --pid="$GROUP" "$out" &
    TAIL_PID=$!
    wait "$GROUP" || rc=$?
    wait "$TAIL_PID" || true
    TAIL_PID=
    kill -KILL -- "-$GROUP" 2>/dev/null || true
    GROUP=
    if ((rc == 124 || rc == 137)); then
        say "!! timed out after ${secs}s: $*"
    fi
    return "$rc"
}

start_services() {
    local attempt
    local -a ports
    for attempt in 1 2 3; do
        mapfile -t ports < <("$ROOT/ops/freeport.sh" 2)
        if "$ROOT/ops/services.sh" start "$TMP" "${ports[0]}" "${ports[1]}" --fast; then
            export CONVEYOR_CHECK_REDIS_PORT=${ports[0]} CONVEYOR_CHECK_PG_PORT=${ports[1]}
            return 0
        fi
        say "services failed to start (attempt $attempt), retrying on other ports"
        "$ROOT/ops/services.sh" stop "$TMP" || true
    done
    return 1
}

# ---------------------------------------------------------------- phases

# cmocka_counts FILE — print "PASSED FAILED" from cmocka's summary lines.
cmocka_counts() {
    awk '/^\[  PASSED  \] [0-9]+ test/ { p += $4 }
         /^\[  FAILED  \] [0-9]+ test\(s\), listed below/ { f += $4 }
         END { print p + 0, f + 0 }' "$1"
}

run_unit_tests() {
    header "unit tests (${#UNIT_PATHS[@]} binaries)"
    local i t path out rc p f
    for i in "${!UNIT_PATHS[@]}"; do
        path=${UNIT_PATHS[i]}
        t=${path#"$ROOT"/}
        out=$TMP/unit-$i-$(basename "$t").out
        say "---- $t"
        if [[ ! -x $path ]]; then
            say "!! $t: missing or not executable"
            FAILED=$((FAILED + 1))
            continue
        fi
        rc=0
        run_logged "$out" "$UNIT_TIMEOUT" "$path" || rc=$?
        read -r p f < <(cmocka_counts "$out")
        if ((rc != 0 && f == 0)); then
            say "!! $t exited with status $rc"
            f=1
        elif ((rc == 0 && p == 0 && f == 0)); then
            say "(no cmocka summary; counted as 1 passed test)"
            p=1
        fi
        say "---- $t: $p passed, $f failed"
        PASSED=$((PASSED + p))
        FAILED=$((FAILED + f))
    done
}

# tap_count KEY FILE — the last top-level "# KEY N" of a TAP stream ("" if none).
tap_count() {
    awk -v k="$1" '$0 ~ "^# " k " [0-9]+$" { v = $3 } END { print v }' "$2"
}

run_integration_tests() {
    local -a files
    shopt -s nullglob
    if [[ -n ${CHECK_TESTS:-} ]]; then # a few files, while working on them
        local name
        for name in $CHECK_TESTS; do files+=("$ROOT"/tests/integration/"$name".test.js); done
    else
        files=("$ROOT"/tests/integration/*.test.js)
    fi
    shopt -u nullglob
    header "integration tests (${#files[@]} files)"
    if ((${#files[@]} == 0)); then
        say "(no tests/integration/*.test.js)"
        return 0
    fi
    command -v node >/dev/null 2>&1 || die "node not found: run ops/deps.sh"
    local -a cmd=(node --test)
    if node --test-concurrency=1 -e '' >/dev/null 2>&1; then
        cmd+=(--test-concurrency=1)
    fi
    cmd+=(--test-reporter=tap "${files[@]#"$ROOT"/}")
    local out=$TMP/integration.out rc=0 pass fail cancelled
    run_logged "$out" "$INTEGRATION_TIMEOUT" "${cmd[@]}" || rc=$? # from $ROOT
    pass=$(tap_count pass "$out")
    fail=$(tap_count fail "$out")
    cancelled=$(tap_count cancelled "$out")
    if [[ -z $pass || -z $fail ]]; then
        say "!! no TAP summary (# pass / # fail) from node (status $rc)"
        PASSED=$((PASSED + ${pass:-0}))
        FAILED=$((FAILED + ${fail:-0} + 1))
        return 0
    fi
    fail=$((fail + ${cancelled:-0}))
    if ((rc != 0 && fail == 0)); then
        say "!! node exited with status $rc but reported no failure"
        fail=1
    fi
    say "---- integration: $pass passed, $fail failed"
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail))
}

main() {
    parse_args "$@"
    cd "$ROOT"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    header "check: BIN=$BIN SAN=$SAN"
    [[ -x $BIN ]] || say "(warning: $BIN is missing or not executable)"
    if [[ $SAN == 1 ]]; then
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    fi

    TMP=$(mktemp -d /tmp/cvchk.XXXXXX)
    chmod 755 "$TMP"
    header "services (Redis + PostgreSQL, --fast) in $TMP"
    if ! start_services; then
        say "!! could not start Redis/PostgreSQL"
        say "0 passed, 1 failed"
        exit 1
    fi
    set -a
    # shellcheck source=/dev/null
    . "$TMP/env"
    set +a
    export CONVEYOR_BIN=$BIN CONVEYOR_CHECK_TMP=$TMP
    # the OpenAI-compatible test provider of the same build (bin/conveyor-test-provider[-san])
    CONVEYOR_TEST_PROVIDER=$(dirname "$BIN")/$(basename "$BIN" | sed 's/^conveyor/conveyor-test-provider/')
    export CONVEYOR_TEST_PROVIDER

    run_unit_tests
    run_integration_tests

    header "summary"
    if ((PASSED + FAILED == 0)); then say "nothing ran: that counts as a failure"; fi
    say "$PASSED passed, $FAILED failed" # the last line of output
    if ((FAILED > 0 || PASSED == 0)); then exit 1; fi
}

main "$@"
