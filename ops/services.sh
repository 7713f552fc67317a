#!/usr/bin/env bash
# ops/services.sh — private Redis + PostgreSQL 15 for Conveyor (make run, make check).
#
#   ops/services.sh start DIR REDIS_PORT PG_PORT [--fast]
#   ops/services.sh stop DIR
#
# start: Redis data in DIR/redis on 127.0.0.1, with a password made once (DIR/redis/
#   password, 0600); PostgreSQL data in DIR/pg/data, on a unix socket only (in a 0700
#   directory; PG_PORT names the socket), no TCP listener; creates role and database
#   `conveyor`; writes DIR/env (0600):
#     CONVEYOR_REDIS_URL='redis://:PASSWORD@127.0.0.1:REDIS_PORT'
#     REDISCLI_AUTH='PASSWORD'   (redis-cli takes it from there)
#     CONVEYOR_DATABASE_URL='host=SOCKET_DIR port=PG_PORT dbname=conveyor user=conveyor'
#   (load it with: set -a; . DIR/env; set +a). Servers already running from
#   DIR are reused. --fast trades durability for speed (tests only): no Redis
#   AOF, PostgreSQL without fsync.
# stop: stops both servers and waits until they are gone; fine when nothing runs.
#
# Files in DIR: redis/{redis.pid,redis.log,redis.out,port,mode}, pg/{data,pg.log,initdb.log},
#   pg/sockdir (unix socket dir when DIR/pg/run would be too long),
#   pg/base (where the PostgreSQL files are when user postgres cannot enter DIR).
# Env: CONVEYOR_PG_BIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN=${CONVEYOR_PG_BIN:-/usr/lib/postgresql/15/bin}
readonly PG_BIN
readonly PG_USER=postgres
readonly SOCKDIR_MAX=90 # + "/.s.PGSQL.NNNNN" must stay < 108 bytes (sun_path)
readonly START_TIMEOUT=30
readonly STOP_TIMEOUT=60
readonly FALLBACK_ROOT=/var/lib/conveyor

# Set by pg_locate.
PG_BASE='' PG_DATA='' PG_LOG=''

# Messages never fail the script: with the terminal gone (closed under make run), a
# failing write must not stop a stop half-way.
log() { printf 'services: %s\n' "$*" >&2 2>/dev/null || :; }
die() {
    printf 'services: error: %s\n' "$*" >&2 2>/dev/null || :
    exit 1
}
usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------- processes

# pid_alive PID — true while PID exists and is not a zombie (exited daemons
# linger as zombies for a while here, so `kill -0` is not enough).
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '/^State:/ { print $2; exit }' "/proc/$pid/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# pid_is PID NAME — PID is alive and its command name is NAME.
pid_is() {
    local comm
    pid_alive "$1" || return 1
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [[ $comm == "$2" ]]
}

# wait_gone PID SECONDS — wait until PID is gone; false on timeout.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop_pid PID NAME — SIGTERM, wait, then SIGKILL as a last resort.
stop_pid() {
    local pid=$1 name=$2
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$STOP_TIMEOUT" && return 0
    log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$name (pid $pid) does not die"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
        die "bad port: $1"
    fi
}

# ---------------------------------------------------------------- directories

# make_dirs DIR — mkdir -p DIR; chmod 755 DIR and every directory this call
# created (never pre-existing parents: those are not ours to open up).
make_dirs() {
    local dir=$1 top=$1
    local -a created=()
    while [[ ! -e $top ]]; do
        created+=("$top")
        top=$(dirname "$top")
    done
    mkdir -p "$dir"
    ((${#created[@]} == 0)) || chmod 755 "${created[@]}"
    chmod 755 "$dir"
}

# in_background LOG CMD... — starts CMD with output to LOG, in a process group of its
# own (the terminal's Ctrl-C meant for make does not reach it) but in the caller's
# session. Not setsid, --daemonize or pg_ctl start: each new session is a scheduler
# autogroup of its own, and on this machine's kernel a server alone in its autogroup
# was seen to wait up to 12 s for a CPU while the api kept both cores busy (a PING to
# Redis unanswered meanwhile, requests past their timeout). Sets STARTED_PID.
STARTED_PID=''
in_background() {
    local out=$1
    shift
    set -m # job control: the job below gets a process group of its own
    "$@" </dev/null >>"$out" 2>&1 &
    STARTED_PID=$!
    set +m
}

# as_pg CMD... — run CMD as the PostgreSQL user (root: `postgres`; otherwise
# ourselves). From / so that the user never needs our working directory.
as_pg() {
    if is_root; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

give_to_pg() {
    if is_root; then chown "$PG_USER:$PG_USER" "$@"; fi
}

pg_can_enter() { as_pg test -x "$1" -a -w "$1" 2>/dev/null; }

# shell_safe PATH — true when PATH can go unquoted into pg_ctl's -o string.
shell_safe() { [[ $1 =~ ^[A-Za-z0-9_./+-]+$ ]]; }

# pg_locate DIR — set PG_BASE / PG_DATA / PG_LOG for DIR (no side effects).
pg_locate() {
    local dir=$1
    PG_BASE=$dir/pg
    if [[ -s $dir/pg/base ]]; then
        PG_BASE=$(<"$dir/pg/base")
    fi
    PG_DATA=$PG_BASE/data
    PG_LOG=$PG_BASE/pg.log
}

# pg_prepare_base DIR — create PG_BASE with a directory the PostgreSQL user
# can reach. When it cannot enter DIR (e.g. DIR under /root, mode 0700), the
# PostgreSQL files go to a directory under /var/lib/conveyor, recorded in
# DIR/pg/base.
pg_prepare_base() {
    local dir=$1
    make_dirs "$dir/pg"
    pg_locate "$dir"
    if [[ $PG_BASE == "$dir/pg" ]]; then
        give_to_pg "$dir/pg"
        if ! pg_can_enter "$dir/pg"; then
            make_dirs "$FALLBACK_ROOT"
            PG_BASE=$(mktemp -d "$FALLBACK_ROOT/pg.XXXXXX")
            chmod 755 "$PG_BASE"
            give_to_pg "$PG_BASE"
            printf '%s\n' "$PG_BASE" >"$dir/pg/base"
            log "user $PG_USER cannot enter $dir (a parent directory is private);" \
                "PostgreSQL files go to $PG_BASE instead"
            pg_locate "$dir"
        fi
    fi
    [[ -d $PG_BASE ]] || die "PostgreSQL directory $PG_BASE (from $dir/pg/base) is missing"
    touch "$PG_LOG"
    give_to_pg "$PG_LOG"
}

# pg_sockdir DIR — print the unix socket directory to use, creating it.
# DIR/pg/run normally; a short private directory under /tmp when that path is
# too long for a unix socket (or unsafe for pg_ctl's option string).
pg_sockdir() {
    local dir=$1 sock=$PG_BASE/run
    if [[ -s $dir/pg/sockdir ]] && [[ -d $(<"$dir/pg/sockdir") ]]; then
        sock=$(<"$dir/pg/sockdir")
    elif ((${#sock} > SOCKDIR_MAX)) || ! shell_safe "$sock"; then
        sock=$(mktemp -d /tmp/cvpg.XXXXXX)
        printf '%s\n' "$sock" >"$dir/pg/sockdir"
    else
        mkdir -p "$sock"
    fi
    chmod 700 "$sock" # private: only the server (and root) may use the socket
    give_to_pg "$sock"
    printf '%s\n' "$sock"
}

# pg_forget_sockdir DIR — remove the short /tmp socket directory, if any.
pg_forget_sockdir() {
    local dir=$1 sock
    [[ -s $dir/pg/sockdir ]] || return 0
    sock=$(<"$dir/pg/sockdir")
    case $sock in
    /tmp/cvpg.*) rm -rf -- "$sock" ;;
    *) ;; # not ours to remove
    esac
    rm -f -- "$dir/pg/sockdir"
}

# ---------------------------------------------------------------- Redis

# redis_password DIR — print the private Redis's password, made once (DIR/redis/password,
# 0600). Every local user can reach 127.0.0.1: without one, anyone could write Conveyor's
# keys (an admin API key record, say).
redis_password() {
    local f=$1/redis/password pw
    if [[ ! -s $f ]]; then
        pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
        [[ ${#pw} == 48 ]] || die "cannot make a Redis password"
        (umask 077 && printf '%s\n' "$pw" >"$f.tmp") && mv -f "$f.tmp" "$f"
    fi
    head -n 1 "$f"
}

# redis_cli DIR ARGS... — redis-cli against the private Redis (the password in
# REDISCLI_AUTH, never on a command line).
redis_cli() {
    local dir=$1
    shift
    REDISCLI_AUTH=$(redis_password "$dir") redis-cli -h 127.0.0.1 "$@"
}

redis_ping() {
    [[ $(redis_cli "$1" -p "$2" ping 2>/dev/null) == PONG ]]
}

# redis_answers_as DIR PORT PID — the Redis answering on PORT is process PID (not another
# server that took the port between our check and our bind).
redis_answers_as() {
    [[ $(redis_cli "$1" -p "$2" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p') == "$3" ]]
}

# redis_pid DIR — print the pid of the Redis server running from DIR.
redis_pid() {
    local f=$1/redis/redis.pid pid
    [[ -s $f ]] || return 1
    read -r pid <"$f" || return 1
    pid_is "$pid" redis-server || return 1
    printf '%s\n' "$pid"
}

redis_start() {
    local dir=$1 port=$2 fast=$3 rdir=$1/redis pid aof=yes
    mkdir -p "$rdir"
    chmod 700 "$rdir"
    if pid=$(redis_pid "$dir"); then
        redis_answers_as "$dir" "$port" "$pid" ||
            die "Redis from $rdir (pid $pid) runs, but not on 127.0.0.1:$port; stop it first: ops/services.sh stop $dir"
        log "reusing Redis (pid $pid) on 127.0.0.1:$port"
        return 0
    fi
    port_in_use "$port" && die "127.0.0.1:$port (Redis port) is already in use by another program"
    ((fast)) && aof=no
    rm -f "$rdir/redis.pid"
    printf '%s\n' "$port" >"$rdir/port"
    if ((fast)); then echo fast >"$rdir/mode"; else echo durable >"$rdir/mode"; fi
    # the password from a file only Redis's user reads (not on its command line)
    (umask 077 && printf 'requirepass %s\n' "$(redis_password "$dir")" >"$rdir/redis.conf")
    # not --daemonize: that would give Redis a session of its own (see in_background)
    in_background "$rdir/redis.out" redis-server "$rdir/redis.conf" --port "$port" --bind 127.0.0.1 \
        --protected-mode yes --dir "$rdir" --appendonly "$aof" --appendfsync everysec \
        --save '' --hash-max-listpack-value 1024 \
        --pidfile "$rdir/redis.pid" --logfile "$rdir/redis.log"
    local deadline=$((SECONDS + START_TIMEOUT))
    until redis_ping "$dir" "$port"; do
        if ((SECONDS >= deadline)) || ! pid_alive "$STARTED_PID"; then
            tail -n 20 "$rdir/redis.log" >&2 || true
            die "Redis did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s (log: $rdir/redis.log)"
        fi
        sleep 0.05
    done
    if ! redis_answers_as "$dir" "$port" "$STARTED_PID"; then
        kill -TERM "$STARTED_PID" 2>/dev/null || true
        die "another server answers on 127.0.0.1:$port, not the Redis started here (log: $rdir/redis.log)"
    fi
    log "Redis started on 127.0.0.1:$port (pid $STARTED_PID)"
}

redis_stop() {
    local dir=$1 rdir=$1/redis pid port mode
    pid=$(redis_pid "$dir") || {
        rm -f "$rdir/redis.pid"
        return 0
    }
    port=$(cat "$rdir/port" 2>/dev/null || true)
    mode=$(cat "$rdir/mode" 2>/dev/null || true)
    if [[ -n $port ]]; then
        if [[ $mode == fast ]]; then
            redis_cli "$dir" -p "$port" shutdown nosave >/dev/null 2>&1 || true
        else
            redis_cli "$dir" -p "$port" shutdown >/dev/null 2>&1 || true
        fi
        wait_gone "$pid" 10 || true
    fi
    stop_pid "$pid" Redis
    rm -f "$rdir/redis.pid"
    log "Redis stopped"
}

# ---------------------------------------------------------------- PostgreSQL

# pg_pid — print the pid of the postmaster running on PG_DATA.
pg_pid() {
    local f=$PG_DATA/postmaster.pid pid
    [[ -r $f ]] || return 1
    read -r pid <"$f" || return 1
    pid_is "$pid" postgres || return 1
    printf '%s\n' "$pid"
}

# pg_ready SOCKDIR PORT — the server answers on its unix socket.
pg_ready() { "$PG_BIN/pg_isready" -q -h "$1" -p "$2" -t 2 >/dev/null 2>&1; }

pg_init() {
    [[ -s $PG_DATA/PG_VERSION ]] && return 0
    if [[ -d $PG_DATA ]] && [[ -n $(ls -A "$PG_DATA") ]]; then
        die "$PG_DATA is not empty but holds no PostgreSQL cluster; remove it and retry"
    fi
    mkdir -p "$PG_DATA"
    chmod 700 "$PG_DATA"
    give_to_pg "$PG_DATA"
    # -A trust: no passwords. Acceptable because the server listens on no TCP port at
    # all, only on a unix socket in a private (0700) directory: only its own user and
    # root reach it (a 127.0.0.1 listener would let every local user in).
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres \
        --encoding=UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1; then
        tail -n 20 "$PG_BASE/initdb.log" >&2 || true
        die "initdb failed (log: $PG_BASE/initdb.log)"
    fi
    log "PostgreSQL cluster created in $PG_DATA"
}

pg_start() {
    local dir=$1 port=$2 fast=$3 pid sock opts
    pg_prepare_base "$dir"
    pg_init
    sock=$(pg_sockdir "$dir")
    if pid=$(pg_pid); then
        pg_ready "$sock" "$port" ||
            die "PostgreSQL from $PG_DATA (pid $pid) runs, but not on port $port; stop it first: ops/services.sh stop $dir"
        log "reusing PostgreSQL (pid $pid) on $sock, port $port"
        return 0
    fi
    # no TCP listener (-h ''): the unix socket in $sock only (see pg_init)
    opts="-p $port -k $sock"
    # Tests only: never for data that must survive a crash.
    ((fast)) && opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    # the postmaster itself, not pg_ctl start: pg_ctl puts it in a session of its own
    # (see in_background); pg_ctl stop still works from postmaster.pid
    # shellcheck disable=SC2086 # opts: words made of shell-safe paths (pg_sockdir)
    in_background "$PG_LOG" as_pg "$PG_BIN/postgres" -D "$PG_DATA" -h '' $opts
    local deadline=$((SECONDS + START_TIMEOUT))
    until pg_ready "$sock" "$port"; do
        if ((SECONDS >= deadline)) || ! pid_alive "$STARTED_PID"; then
            tail -n 20 "$PG_LOG" >&2 || true
            die "PostgreSQL failed to start on $sock, port $port (log: $PG_LOG)"
        fi
        sleep 0.1
    done
    log "PostgreSQL started on $sock, port $port (data: $PG_DATA)"
}

# pg_bootstrap SOCKDIR PORT — role and database `conveyor`, if absent.
pg_bootstrap() {
    local sock=$1 port=$2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres \
        >/dev/null <<'SQL' || die "could not create role/database conveyor on $sock, port $port"
SELECT 'CREATE ROLE conveyor LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'conveyor')\gexec
SELECT 'CREATE DATABASE conveyor OWNER conveyor'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'conveyor')\gexec
SQL
}

pg_stop() {
    local dir=$1 pid
    [[ -d $dir/pg ]] || return 0
    pg_locate "$dir"
    if pid=$(pg_pid); then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m fast -w -t "$STOP_TIMEOUT" >/dev/null 2>&1 || true
        stop_pid "$pid" PostgreSQL
        log "PostgreSQL stopped"
    fi
    pg_forget_sockdir "$dir"
}

# ---------------------------------------------------------------- commands

write_env() {
    local dir=$1 rport=$2 pport=$3 sock=$4 pw
    pw=$(redis_password "$dir")
    (
        umask 077 # it holds the Redis password
        {
            printf "CONVEYOR_REDIS_URL='redis://:%s@127.0.0.1:%s'\n" "$pw" "$rport"
            printf "REDISCLI_AUTH='%s'\n" "$pw"
            printf "CONVEYOR_DATABASE_URL='host=%s port=%s dbname=conveyor user=conveyor'\n" "$sock" "$pport"
        } >"$dir/env.tmp"
    )
    mv -f "$dir/env.tmp" "$dir/env"
}

check_tools() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        die "redis-server not found: run ops/deps.sh"
    fi
    [[ -x $PG_BIN/pg_ctl && -x $PG_BIN/initdb ]] ||
        die "PostgreSQL 15 not found in $PG_BIN: run ops/deps.sh"
    if is_root; then
        getent passwd "$PG_USER" >/dev/null ||
            die "user $PG_USER does not exist (PostgreSQL refuses to run as root): run ops/deps.sh"
    fi
}

cmd_start() {
    (($# >= 3 && $# <= 4)) || usage
    local dir=$1 rport=$2 pport=$3 fast=0
    if (($# == 4)); then
        [[ $4 == --fast ]] || usage
        fast=1
    fi
    check_port "$rport"
    check_port "$pport"
    [[ $rport != "$pport" ]] || die "Redis and PostgreSQL need different ports"
    check_tools
    make_dirs "$dir"
    dir=$(cd "$dir" && pwd)
    redis_start "$dir" "$rport" "$fast"
    pg_start "$dir" "$pport" "$fast"
    local sock
    sock=$(pg_sockdir "$dir")
    pg_bootstrap "$sock" "$pport"
    write_env "$dir" "$rport" "$pport" "$sock"
}

cmd_stop() {
    (($# >= 1)) || usage
    local dir=$1
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    pg_stop "$dir"
    redis_stop "$dir"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1
    shift
    case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"
