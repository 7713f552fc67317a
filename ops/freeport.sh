#!/usr/bin/env bash
# ops/freeport.sh [COUNT] — print COUNT (default 1) distinct TCP ports on
# 127.0.0.1 that nothing uses right now, one per line.
#
# Ports are drawn at random from 20000-32767, below Linux's default ephemeral
# range (32768-60999), so outgoing connections do not take them meanwhile.
# A port is "free" when a connect to 127.0.0.1 is refused and, if `ss` is
# available, no socket in any state uses it as its local port.
set -euo pipefail

readonly PORT_MIN=20000
readonly PORT_MAX=32767
readonly MAX_TRIES=2000

die() {
    printf 'freeport: %s\n' "$*" >&2
    exit 1
}

# port_in_use PORT — true when something listens on, or holds, 127.0.0.1:PORT.
port_in_use() {
    local port=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 0
    fi
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Htan "( sport = :$port )" 2>/dev/null) ]] && return 0
    fi
    return 1
}

random_port() {
    echo $((PORT_MIN + (RANDOM * 32768 + RANDOM) % (PORT_MAX - PORT_MIN + 1)))
}

main() {
    local count=${1:-1}
    [[ $count =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [COUNT]  (COUNT >= 1)"
    local -A seen=()
    local -a ports=()
    local tries=0 port
    while ((${#ports[@]} < count)); do
        ((++tries <= MAX_TRIES)) || die "could not find $count free ports"
        port=$(random_port)
        [[ -z ${seen[$port]:-} ]] || continue
        seen[$port]=1
        port_in_use "$port" && continue
        ports+=("$port")
    done
    printf '%s\n' "${ports[@]}"
}

main "$@"
