# Helpers for the tests under a real systemd: containers booted with systemd-nspawn from the
# cached Debian rootfs, each in its own network namespace on one bridge, and check counters.
# Sourced by tests/systemd/run.
#
# Layout (S picked so that 10.78.S.0/24 is unused on this machine):
#
#   host:  bridge hasd<tag>b  10.78.S.1/24   (left free for host-side services, e.g. moto)
#            ├── veth hasd<tag>h1 ── netns hasd<tag>n1: eth0 10.78.S.11/24  container 1
#            ├── veth hasd<tag>h2 ── netns hasd<tag>n2: eth0 10.78.S.12/24  container 2
#            └── ...
#
# Containers boot with `systemd-nspawn -b --register=no --keep-unit --volatile=overlay`: no
# machined (so no `machinectl`/`systemd-run --machine`); commands run inside with
# `nsenter -t <container PID 1> -a`, which joins all of its namespaces (mount, pid, net, ipc,
# uts, cgroup) and so reaches its systemd, journald and files. --volatile=overlay keeps every
# change in a tmpfs: the cached rootfs stays clean.

ROOTFS=${HA_AGENT_ROOTFS:-/var/cache/ha-agent/rootfs-bookworm-v3}
# Names stay within the 15 characters of an interface name: hasd + 5 digits + suffix.
TAG=${HA_AGENT_TEST_TAG:-$(printf '%05d' $(($$ % 100000)))}
SUBNET=
BRIDGE=hasd${TAG}b
WORK=$(mktemp -d /tmp/ha-agent-systemd-tests.XXXXXX)
declare -A CONTAINER_NSPAWN=() CONTAINER_PID1=()

PASSED=0
FAILED=0
FAILURES=()

say() { printf '%s\n' "$*"; }
pass() {
    PASSED=$((PASSED + 1))
    printf 'ok   %s\n' "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    FAILURES+=("$1")
    printf 'FAIL %s\n' "$1"
    [[ -z ${2:-} ]] || printf '%s\n' "$2" | sed 's/^/     | /' | head -n 40
}
# check NAME COMMAND...: passes when COMMAND exits 0; on failure shows its output.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name" "$out"
    fi
}
# expect_equal NAME ACTUAL EXPECTED
expect_equal() {
    if [[ $2 == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "expected: $3"$'\n'"actual:   $2"
    fi
}
# expect_match NAME TEXT REGEX (extended)
expect_match() {
    if grep -Eq -- "$3" <<<"$2"; then
        pass "$1"
    else
        fail "$1" "expected a match for /$3/ in:"$'\n'"$2"
    fi
}
summary() {
    say ""
    if [[ $FAILED -gt 0 ]]; then
        say "failed checks:"
        printf '  %s\n' "${FAILURES[@]}"
    fi
    say "$PASSED passed, $FAILED failed"
}

# not COMMAND...: succeeds when COMMAND fails.
not() { ! "$@"; }

# wait_until SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds; fails on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@" >/dev/null 2>&1; do
        [[ $SECONDS -lt $deadline ]] || return 1
        sleep 0.2
    done
}

pick_subnet() {
    local s used
    used=$( { ip -4 -o addr show; ip -4 route show; } 2>/dev/null)
    for s in $(seq 1 250); do
        if ! grep -q "10\.78\.$s\." <<<"$used"; then
            SUBNET=$s
            return
        fi
    done
    echo "no free 10.78.S.0/24 subnet on this machine" >&2
    return 1
}

# Node N's address.
node_address() { echo "10.78.$SUBNET.$((10 + $1))"; }

setup_bridge() {
    [[ -n $SUBNET ]] || pick_subnet
    ip link add "$BRIDGE" type bridge
    ip addr add "10.78.$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# boot_container N [extra systemd-nspawn options...]: network namespace hasd<tag>nN with eth0 on
# the bridge, then the container booted into it. Waits until its systemd finished booting.
boot_container() {
    local n=$1 ns=hasd${TAG}n$1 host=hasd${TAG}h$1 guest=hasd${TAG}g$1 pid1 nspawn
    shift
    [[ -n $SUBNET ]] || setup_bridge
    ip netns add "$ns"
    ip link add "$host" type veth peer name "$guest"
    ip link set "$guest" netns "$ns"
    ip -n "$ns" link set "$guest" name eth0
    ip -n "$ns" addr add "$(node_address "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip link set "$host" master "$BRIDGE" up

    systemd-nspawn -b --register=no --keep-unit --volatile=overlay --quiet \
        -D "$ROOTFS" --machine="hasd${TAG}c$n" \
        --network-namespace-path="/run/netns/$ns" \
        --bind-ro="$WORK/share:/mnt/share" \
        --console=read-only "$@" >"$WORK/console-$n.log" 2>&1 &
    nspawn=$!
    CONTAINER_NSPAWN[$n]=$nspawn
    # The container's PID 1 is systemd-nspawn's child.
    if ! wait_until 20 pgrep -P "$nspawn" -x systemd; then
        echo "container $n did not start; console:" >&2
        tail -n 20 "$WORK/console-$n.log" >&2
        return 1
    fi
    pid1=$(pgrep -P "$nspawn" -x systemd)
    CONTAINER_PID1[$n]=$pid1
    local state
    # systemctl needs the manager's private socket, which appears a little after PID 1 starts.
    if ! wait_until 30 nsenter -t "$pid1" -a test -S /run/systemd/private; then
        echo "container $n: systemd did not come up" >&2
        return 1
    fi
    state=$(timeout 60 nsenter -t "$pid1" -a systemctl is-system-running --wait 2>&1) || true
    case $state in
        running) ;;
        degraded)
            echo "container $n booted degraded; failed units:" >&2
            in_container "$n" systemctl --failed --no-legend >&2 || true
            ;;
        *)
            echo "container $n did not finish booting ($state)" >&2
            return 1
            ;;
    esac
}

# in_container N COMMAND...: runs COMMAND as root inside container N with a clean environment,
# bounded to 120 s.
in_container() {
    local n=$1
    shift
    timeout 120 nsenter -t "${CONTAINER_PID1[$n]}" -a \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"
}

# as_user N USER COMMAND...: like in_container, as USER with its groups.
as_user() {
    local n=$1 user=$2
    shift 2
    in_container "$n" setpriv --reuid="$user" --regid="$user" --init-groups \
        env HOME=/ "$@"
}

# unit_property N PROPERTY: a property of ha-agent.service in container N.
unit_property() {
    in_container "$1" systemctl show -P "$2" ha-agent.service
}

stop_container() {
    local n=$1 nspawn=${CONTAINER_NSPAWN[$1]:-}
    if [[ -n $nspawn ]] && kill -0 "$nspawn" 2>/dev/null; then
        # SIGTERM makes systemd-nspawn shut the container down cleanly.
        kill -TERM "$nspawn" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$nspawn" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.2; done
        kill -KILL "$nspawn" 2>/dev/null || true
        wait "$nspawn" 2>/dev/null || true
    fi
    unset "CONTAINER_NSPAWN[$n]" "CONTAINER_PID1[$n]"
    ip netns del "hasd${TAG}n$n" 2>/dev/null || true
    ip link del "hasd${TAG}h$n" 2>/dev/null || true
}

cleanup() {
    local n
    for n in "${!CONTAINER_NSPAWN[@]}"; do
        stop_container "$n"
    done
    # The emulator of tests/systemd/cluster.sh, if it was started.
    if declare -F stop_moto >/dev/null; then stop_moto; fi
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ -n ${KEEP_WORK:-} ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
