# The last check of issue 6: three containers on one bridge, each with the .deb installed and
# configured as one member of a three-voter group with one Elastic IP, and moto (the AWS
# emulator) on the host side of the bridge. The Elastic IP lands on the leader; stop the leader's
# whole container and it moves to another. Sourced by tests/systemd/run, which calls
# test_cluster_failover after its single-container checks.
#
#   host:  bridge 10.78.S.1 ── moto (aws_world.py serve), observed with boto3 (aws_world.py)
#            ├── container 1  10.78.S.11  ha-agent node 1 ─┐
#            ├── container 2  10.78.S.12  ha-agent node 2  ├─ Raft on :7946, AWS via 10.78.S.1
#            └── container 3  10.78.S.13  ha-agent node 3 ─┘
#
# "Stop the leader" is a power cut: SIGKILL to the container's PID 1 (the kernel kills every
# process of its PID namespace at once: no clean shutdown, no leadership hand-off), then its
# veth is deleted, so its address stops answering like an instance that is gone. The time is
# measured from that moment until DescribeAddresses shows the Elastic IP on another instance's
# interface, polled every 50 ms.
#
# Uses from lib.sh and run: boot_container, in_container, configure, wait_until, the counters.

# The virtualenv with moto[server] (and boto3): HA_AGENT_MOTO as the Rust tests take it (the
# virtualenv, or the moto_server inside it), else the one scripts/setup makes in the cache.
MOTO_VENV=${HA_AGENT_MOTO:-${HA_AGENT_CACHE:-/var/cache/ha-agent}/venv}
[[ -f $MOTO_VENV ]] && MOTO_VENV=$(dirname "$(dirname "$MOTO_VENV")")
MOTO_PY=$MOTO_VENV/bin/python
AWS_WORLD=$ROOT/tests/systemd/aws_world.py
FAILOVER_LIMIT=30
declare -A NODE_INSTANCE=() NODE_ENI=() ENI_NODE=()
ALLOCATION=
MOTO_ENDPOINT=

# aws_world ARGS...: the boto3 helper, bounded.
aws_world() { timeout 60 "$MOTO_PY" "$AWS_WORLD" "$@"; }

# ensure_moto: moto[server] in the cache's virtualenv (as scripts/setup installs it); idempotent.
ensure_moto() {
    [[ -x $MOTO_VENV/bin/moto_server ]] && return 0
    say "installing moto[server] into $MOTO_VENV"
    timeout 600 python3 -m venv "$MOTO_VENV" &&
        timeout 600 "$MOTO_VENV/bin/pip" install --quiet 'moto[server]'
}

# start_moto: moto on the bridge's host address; sets MOTO_ENDPOINT and MOTO_PID. It runs until
# its stdin (the coprocess pipe held by this shell) closes, and cleanup kills it by pid too.
start_moto() {
    local host="10.78.$SUBNET.1" line
    coproc MOTO { exec "$MOTO_PY" "$AWS_WORLD" serve "$host" 2>"$WORK/moto.log"; }
    MOTO_PID=$MOTO_PID
    if ! read -t 60 -r line <&"${MOTO[0]}" || [[ $line != "moto listening on $host:"* ]]; then
        echo "moto did not start: $line $(tail -n 20 "$WORK/moto.log")" >&2
        return 1
    fi
    MOTO_ENDPOINT="http://${line##* }"
}

stop_moto() {
    if [[ -n ${MOTO_PID:-} ]]; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
        MOTO_PID=
    fi
}

# create_world: VPC, subnet 10.78.S.0/24, one instance per container address, one Elastic IP.
create_world() {
    local out kind ip instance eni n
    out=$(aws_world create "$MOTO_ENDPOINT" "10.78.$SUBNET.0/24" \
        "$(node_address 1)" "$(node_address 2)" "$(node_address 3)" 2>&1) || {
        echo "$out" >&2
        return 1
    }
    while read -r kind ip instance eni; do
        case $kind in
            instance)
                n=$((${ip##*.} - 10))
                NODE_INSTANCE[$n]=$instance
                NODE_ENI[$n]=$eni
                ENI_NODE[$eni]=$n
                ;;
            eip) ALLOCATION=$ip ;;
        esac
    done <<<"$out"
    [[ -n $ALLOCATION && ${#NODE_ENI[@]} -eq 3 ]] || {
        echo "unexpected output: $out" >&2
        return 1
    }
}

# configure_aws_node N: the group configuration of run's `configure` plus this node's [aws]
# identity and the Elastic IP, the credentials drop-in, then enable --now.
configure_aws_node() {
    local n=$1
    configure "$n"
    in_container "$n" sh -c 'cat >> /etc/ha-agent.toml' <<EOF

[aws]
region = "us-east-1"
instance-id = "${NODE_INSTANCE[$n]}"
network-interface-id = "${NODE_ENI[$n]}"
private-ip = "$(node_address "$n")"
endpoint-url = "$MOTO_ENDPOINT"

[[elastic-ip]]
allocation-id = "$ALLOCATION"
EOF
    # What an administrator would do with `systemctl edit ha-agent`.
    in_container "$n" sh -c 'mkdir -p /etc/systemd/system/ha-agent.service.d &&
        printf "[Service]\nEnvironment=AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing\n" \
            > /etc/systemd/system/ha-agent.service.d/test.conf' &&
        in_container "$n" ha-agent check-config >/dev/null &&
        in_container "$n" systemctl daemon-reload &&
        in_container "$n" systemctl enable --now ha-agent
}

# eip_holder: the node number whose interface holds the Elastic IP (empty when none or unknown).
eip_holder() {
    local eni
    eni=$(aws_world holder "$MOTO_ENDPOINT" "$ALLOCATION" 2>/dev/null) || return 1
    echo "${ENI_NODE[$eni]:-}"
}
eip_on_a_node() { [[ -n $(eip_holder) ]]; }

# node_role N: the role `ha-agent status --json` reports in container N.
node_role() {
    in_container "$1" ha-agent status --json 2>/dev/null |
        sed -n 's/^ *"role": *"\([a-z-]*\)".*/\1/p' | head -n 1
}
is_leader() { [[ $(node_role "$1") == leader ]]; }

# power_cut N: container N dies at once (see the top of this file).
power_cut() {
    local n=$1
    kill -KILL "${CONTAINER_PID1[$n]}"
    ip link del "hasd${TAG}h$n" 2>/dev/null
}

test_cluster_failover() {
    local n booted=0 leader out rc status moved new elapsed watcher stopped_fd
    say "three-node failover: moto on the bridge, three containers"
    ensure_moto || { fail "moto[server] is installed in $MOTO_VENV"; return 1; }
    # The single-container checks are done: start from three fresh containers.
    stop_container 1
    [[ -n $SUBNET ]] || setup_bridge
    if start_moto; then
        pass "moto listens on the bridge's host address ($MOTO_ENDPOINT)"
    else
        fail "moto listens on the bridge's host address" "$(tail -n 20 "$WORK/moto.log")"
        return 1
    fi
    if create_world 2>"$WORK/create-world.err"; then
        pass "boto3 creates the VPC, three instances at the container addresses and an Elastic IP ($ALLOCATION)"
    else
        fail "boto3 creates the AWS world" "$(cat "$WORK/create-world.err")"
        return 1
    fi
    for n in 1 2 3; do
        if boot_container "$n" 2>"$WORK/boot-$n.err"; then
            booted=$((booted + 1))
        else
            fail "container $n boots" "$(cat "$WORK/boot-$n.err"; tail -n 20 "$WORK/console-$n.log")"
        fi
    done
    [[ $booted -eq 3 ]] || return 1
    pass "three containers boot on the bridge"
    for n in 1 2 3; do
        out=$(in_container "$n" dpkg -i /mnt/share/ha-agent.deb 2>&1) || {
            fail "node $n: dpkg -i the .deb" "$out"
            return 1
        }
        out=$(configure_aws_node "$n" 2>&1) || {
            fail "node $n: configure and systemctl enable --now ha-agent" "$out"
            return 1
        }
    done
    pass "the .deb is installed, configured and enabled in all three containers"

    if wait_until "$FAILOVER_LIMIT" eip_on_a_node; then
        leader=$(eip_holder)
        pass "the Elastic IP is associated with a member's interface (node $leader)"
    else
        fail "the Elastic IP is associated with a member's interface within ${FAILOVER_LIMIT}s" \
            "$(for n in 1 2 3; do in_container "$n" ha-agent status 2>&1; in_container "$n" journalctl -u ha-agent --no-pager -n 10 2>&1; done)"
        return 1
    fi
    status=$(in_container "$leader" ha-agent status --json 2>&1)
    expect_match "the holder (node $leader) reports role leader" "$status" '"role": "leader"'
    for n in 1 2 3; do
        [[ $n -eq $leader ]] && continue
        expect_equal "node $n is a follower of node $leader" \
            "$(node_role "$n") $(in_container "$n" ha-agent status --json 2>/dev/null | sed -n 's/^ *"leader_id": *\([0-9]*\).*/\1/p')" \
            "follower $leader"
    done

    # The watcher warms up before the stop, so that its start-up is not counted.
    mkfifo "$WORK/stopped-at"
    timeout $((FAILOVER_LIMIT + 30)) "$MOTO_PY" "$AWS_WORLD" wait-move "$MOTO_ENDPOINT" "$ALLOCATION" \
        "${NODE_ENI[$leader]}" "$FAILOVER_LIMIT" <"$WORK/stopped-at" >"$WORK/wait-move.out" 2>&1 &
    watcher=$!
    exec {stopped_fd}>"$WORK/stopped-at"
    if ! wait_until 30 grep -q '^ready$' "$WORK/wait-move.out"; then
        exec {stopped_fd}>&-
        fail "the Elastic IP watcher starts" "$(cat "$WORK/wait-move.out")"
        kill "$watcher" 2>/dev/null
        wait "$watcher" 2>/dev/null
        return 1
    fi
    power_cut "$leader"
    date +%s.%N >&"$stopped_fd"
    exec {stopped_fd}>&-
    wait "$watcher"
    rc=$?
    moved=$(grep -E '^(moved|timeout)' "$WORK/wait-move.out")
    # The container is gone: reap systemd-nspawn, remove its namespace.
    stop_container "$leader"
    if [[ $rc -eq 0 && $moved == moved\ * ]]; then
        read -r _ new elapsed <<<"$moved"
        new=${ENI_NODE[$new]:-?}
        say "     Elastic IP moved from node $leader to node $new ${elapsed} s after the power cut"
        if [[ $new != "?" && $new != "$leader" ]]; then
            pass "leader's container stopped: the Elastic IP moves to node $new within ${FAILOVER_LIMIT}s (${elapsed} s)"
        else
            fail "the Elastic IP moves to another member" "$moved"
            return 1
        fi
        if wait_until 5 is_leader "$new"; then
            pass "the new holder (node $new) reports role leader"
        else
            fail "the new holder (node $new) reports role leader" "$(in_container "$new" ha-agent status 2>&1)"
        fi
    else
        fail "leader's container stopped: the Elastic IP moves to another member within ${FAILOVER_LIMIT}s" \
            "$(cat "$WORK/wait-move.out"; for n in 1 2 3; do [[ $n -eq $leader ]] || in_container "$n" journalctl -u ha-agent --no-pager -n 15 2>&1; done)"
    fi
}
