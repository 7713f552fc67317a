#!/usr/bin/env bash
# ops/deps.sh [--bench] [--test] — install the Debian 12 packages Conveyor needs.
#
# Idempotent and silent when everything is present. Installs only what is
# missing (one `apt-get update` first, only then). Needs root (or password-less
# sudo) when something is missing.
#   --bench  also install the benchmark tools: wrk and, under tests/bench,
#            the npm packages bullmq@5 and ioredis.
#   --test   also install the integration tests' npm packages (tests/integration:
#            the official OpenAI client), as make check does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT

readonly PACKAGES=(
    build-essential pkg-config
    libcivetweb-dev libhiredis-dev libmsgpack-dev libpq-dev
    libcurl4-openssl-dev libuv1-dev libjansson-dev libargon2-dev libssl-dev
    libcmocka-dev
    redis-server postgresql
    nodejs npm wrk curl openssl
)
readonly BENCH_PACKAGES=(wrk nodejs npm)
# A package also counts as present when its command is on PATH: e.g. Node.js
# from NodeSource ships npm inside its `nodejs` and conflicts with Debian's npm.
declare -rA COMMAND_OF=([nodejs]=node [npm]=npm [wrk]=wrk [curl]=curl [openssl]=openssl)
readonly BENCH_NPM=(bullmq@5 ioredis)

log() { printf 'deps: %s\n' "$*"; }
die() {
    printf 'deps: error: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

can_sudo() { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }

# as_root CMD... — run CMD as root (directly, or through password-less sudo).
as_root() {
    if is_root; then "$@"; else sudo -n "$@"; fi
}

is_installed() {
    local status
    # shellcheck disable=SC2016  # ${Status} is a dpkg-query field, not a shell variable
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

is_present() {
    is_installed "$1" && return 0
    [[ -n ${COMMAND_OF[$1]:-} ]] && command -v "${COMMAND_OF[$1]}" >/dev/null 2>&1
}

# install_missing PKG... — apt-get install the packages that are not installed.
install_missing() {
    local -a missing=()
    local pkg
    for pkg in "$@"; do
        is_present "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]} > 0)) || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
    if ! is_root && ! can_sudo; then
        die "missing packages: ${missing[*]}; run ops/deps.sh as root" \
            "(or: apt-get install ${missing[*]})"
    fi
    log "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# PostgreSQL refuses to run as root: ops/services.sh runs it as `postgres`.
ensure_postgres_user() {
    is_root || return 0 # not root: services.sh runs PostgreSQL as the current user
    getent passwd postgres >/dev/null && return 0
    log "creating system user postgres"
    useradd -r -U -d /var/lib/postgresql -s /usr/sbin/nologin postgres
}

# The npm packages the integration tests use (tests/integration/package.json, pinned by
# its package-lock.json): the official OpenAI client.
ensure_test_npm() {
    local dir=$ROOT/tests/integration
    [[ -d $dir/node_modules/openai ]] && return 0
    log "installing npm packages in tests/integration"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
}

ensure_bench_npm() {
    local dir=$ROOT/tests/bench
    if [[ -d $dir/node_modules/bullmq && -d $dir/node_modules/ioredis ]]; then
        return 0
    fi
    mkdir -p "$dir"
    if [[ ! -f $dir/package.json ]]; then
        printf '{\n  "name": "conveyor-bench",\n  "version": "0.0.0",\n  "private": true\n}\n' \
            >"$dir/package.json"
    fi
    log "installing npm packages in tests/bench: ${BENCH_NPM[*]}"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${BENCH_NPM[@]}" </dev/null)
}

main() {
    local bench=0 test=0 arg
    for arg in "$@"; do
        case $arg in
        --bench) bench=1 ;;
        --test) test=1 ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}"
            return 0
            ;;
        *) die "unknown argument: $arg (usage: ops/deps.sh [--bench] [--test])" ;;
        esac
    done
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script targets Debian 12"

    install_missing "${PACKAGES[@]}"
    ensure_postgres_user
    ((test)) && ensure_test_npm
    if ((bench)); then
        install_missing "${BENCH_PACKAGES[@]}"
        ensure_bench_npm
    fi
}

main "$@"
