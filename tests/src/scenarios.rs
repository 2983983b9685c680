//! The end-to-end scenarios, one function per `#[test]` in `tests/e2e.rs`.
//!
//! Correctness is asserted; timings are printed with [`report`] (visible in CI logs) and only
//! bounded where the bound is the point of the test (a leadership hand-off on SIGTERM must not
//! cost an election timeout). Deadlines are generous for a loaded two-core machine.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::cluster::{Cluster, ClusterSpec};
use crate::network::{existing_links, existing_namespaces, Direction, DropCounts, Network};
use crate::status::Role;
use crate::system::report;

/// How long an election may take (election timeout 1 s, randomised up to 2 s, plus load).
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(10);
/// How long a fresh veth may take to pass traffic.
const LINK_UP_DEADLINE: Duration = Duration::from_secs(5);

// ---- network plumbing (no agents) -------------------------------------------------------------

/// Nodes on the bridge reach one another and the bridge address; isolating a node drops its
/// traffic with the other nodes both ways (and only that), and healing restores it.
pub fn plumbing_isolate_blocks_traffic_and_heal_restores_it() -> Result<()> {
    let network = Network::create(&[1, 2, 3])?;
    let (one, two, three) = (network.address(1), network.address(2), network.address(3));
    network.wait_for_ping(1, two, LINK_UP_DEADLINE)?;
    network.wait_for_ping(2, three, LINK_UP_DEADLINE)?;
    network.wait_for_ping(3, one, LINK_UP_DEADLINE)?;
    network.wait_for_ping(1, network.host_address(), LINK_UP_DEADLINE)?;

    network.isolate(1)?;
    ensure!(
        !network.ping(1, two)?,
        "isolated node 1 still reaches node 2"
    );
    ensure!(
        !network.ping(2, one)?,
        "node 2 still reaches isolated node 1"
    );
    ensure!(
        !network.ping(3, one)?,
        "node 3 still reaches isolated node 1"
    );
    ensure!(
        network.ping(2, three)?,
        "isolating node 1 cut nodes 2 and 3 apart"
    );
    ensure!(
        network.ping(1, network.host_address())?,
        "isolating node 1 cut it off from the host side too"
    );
    let counts = network.drop_counts(1)?;
    ensure!(
        counts.inbound > 0 && counts.outbound > 0,
        "isolation should have dropped packets both ways, counted {counts:?}"
    );
    ensure!(
        network.drop_counts(2)? == DropCounts::default(),
        "node 2 has drop rules"
    );

    network.heal(1)?;
    network.heal(1)?; // idempotent
    ensure!(
        network.drop_counts(1)? == DropCounts::default(),
        "heal left drop rules behind"
    );
    network.wait_for_ping(1, two, LINK_UP_DEADLINE)?;
    network.wait_for_ping(3, one, LINK_UP_DEADLINE)?;
    Ok(())
}

/// A one-way cut drops packets in its direction only: the other hook counts nothing.
pub fn plumbing_one_way_cuts_drop_only_their_direction() -> Result<()> {
    let network = Network::create(&[1, 2, 3])?;
    let (two, three) = (network.address(2), network.address(3));
    network.wait_for_ping(1, two, LINK_UP_DEADLINE)?;
    network.wait_for_ping(1, three, LINK_UP_DEADLINE)?;

    // Outbound: node 1's echo requests to node 2 never leave.
    network.cut(1, Direction::Outbound, &[2])?;
    ensure!(
        !network.ping(1, two)?,
        "outbound cut let node 1 reach node 2"
    );
    ensure!(
        network.ping(1, three)?,
        "outbound cut to node 2 also cut node 3"
    );
    let counts = network.drop_counts(1)?;
    ensure!(
        counts.outbound > 0 && counts.inbound == 0,
        "an outbound cut should drop only outbound packets, counted {counts:?}"
    );
    network.heal(1)?;
    network.wait_for_ping(1, two, LINK_UP_DEADLINE)?;

    // Inbound: the requests leave, node 2's replies are dropped on arrival.
    network.cut(1, Direction::Inbound, &[2])?;
    ensure!(
        !network.ping(1, two)?,
        "inbound cut let node 2's replies in"
    );
    ensure!(
        network.ping(1, three)?,
        "inbound cut from node 2 also cut node 3"
    );
    let counts = network.drop_counts(1)?;
    ensure!(
        counts.inbound > 0 && counts.outbound == 0,
        "an inbound cut should drop only inbound packets, counted {counts:?}"
    );
    network.heal_all()?;
    network.wait_for_ping(1, two, LINK_UP_DEADLINE)?;
    Ok(())
}

/// Dropping a network removes its namespaces, veths and bridge, and kills processes left in
/// its namespaces.
pub fn plumbing_teardown_removes_everything() -> Result<()> {
    let network = Network::create(&[1, 2])?;
    let namespaces = [network.namespace(1), network.namespace(2)];
    let links = [network.bridge(), network.host_veth(1), network.host_veth(2)];
    for namespace in &namespaces {
        ensure!(
            existing_namespaces()?.contains(namespace),
            "namespace {namespace} was not created"
        );
    }
    for link in &links {
        ensure!(
            existing_links()?.contains(link),
            "link {link} was not created"
        );
    }
    network.isolate(1)?;
    // A process the harness does not track, left running inside a namespace. Wait until it
    // has entered the namespace (`ip netns exec` joins it just before exec).
    let mut stray = network.command_in(1, "sleep").arg("600").spawn()?;
    let stray_pid = i32::try_from(stray.id())?;
    let mut entered = false;
    for _ in 0..100 {
        entered = network.processes(1)?.contains(&stray_pid);
        if entered {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !entered {
        let _ = stray.kill();
        let _ = stray.wait();
        anyhow::bail!("`ip netns exec` did not put its process in the namespace within 5 s");
    }

    drop(network);

    let namespaces_now = existing_namespaces()?;
    let links_now = existing_links()?;
    for namespace in &namespaces {
        ensure!(
            !namespaces_now.contains(namespace),
            "namespace {namespace} survived teardown"
        );
    }
    for link in &links {
        ensure!(!links_now.contains(link), "link {link} survived teardown");
    }
    let exited = crate::command::wait_with_timeout(&mut stray, Duration::from_secs(5))?;
    if exited.is_none() {
        let _ = stray.kill();
        let _ = stray.wait();
        anyhow::bail!("a process inside a torn-down namespace survived");
    }
    Ok(())
}

// ---- agents -----------------------------------------------------------------------------------

/// The configs the harness writes pass `ha-agent check-config`.
pub fn generated_configs_pass_check_config() -> Result<()> {
    let cluster = Cluster::new(
        "generated_configs_pass_check_config",
        ClusterSpec::three_voters(),
    )?;
    for id in cluster.ids() {
        let mut command = std::process::Command::new(cluster.binary());
        command
            .arg("check-config")
            .arg("--config")
            .arg(cluster.config_path(id)?);
        let output = crate::command::run(&mut command, None, Duration::from_secs(10))?;
        ensure!(
            output.status.success() && output.stdout.contains("ok"),
            "check-config rejected the config of node {id} ({}):\n{}{}",
            output.status,
            output.stdout,
            output.stderr
        );
    }
    cluster.finish()
}

/// SIGKILL the leader: the other two elect a new one in a later term; the old leader,
/// restarted, follows it.
pub fn sigkill_leader_elects_new_leader() -> Result<()> {
    let mut cluster = Cluster::launch(
        "sigkill_leader_elects_new_leader",
        ClusterSpec::three_voters(),
    )?;
    let all = cluster.ids();
    let first = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;

    cluster.kill(first.id)?;
    let killed = Instant::now();
    let survivors = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&survivors, ELECTION_DEADLINE)?;
    report(&format!(
        "sigkill: leader {first} killed; {second} agreed {} ms later",
        killed.elapsed().as_millis()
    ));
    ensure!(second.id != first.id, "the killed node is still the leader");
    ensure!(
        second.term > first.term,
        "new leader {second} is not in a later term than {first}"
    );

    cluster.start(first.id)?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed.id == second.id,
        "after node {} restarted, leadership moved from {second} to {agreed}",
        first.id
    );
    let old = cluster.status(first.id)?;
    ensure!(
        old.role == Role::Follower,
        "restarted old leader reports {old}"
    );
    report(&format!(
        "sigkill: restarted node {} follows {agreed}",
        first.id
    ));
    cluster.finish()
}

/// SIGSTOP the leader: the other two elect a new one; after SIGCONT the old leader follows it.
pub fn sigstop_leader_elects_new_leader_and_old_leader_follows_after_resume() -> Result<()> {
    let mut cluster = Cluster::launch(
        "sigstop_leader_elects_new_leader_and_old_leader_follows_after_resume",
        ClusterSpec::three_voters(),
    )?;
    let all = cluster.ids();
    let first = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;

    cluster.pause(first.id)?;
    let paused = Instant::now();
    let others = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&others, ELECTION_DEADLINE)?;
    report(&format!(
        "sigstop leader: leader {first} paused; {second} agreed {} ms later",
        paused.elapsed().as_millis()
    ));
    ensure!(second.id != first.id, "the paused node is still the leader");
    ensure!(
        second.term > first.term,
        "new leader {second} is not in a later term than {first}"
    );

    cluster.resume(first.id)?;
    let resumed = Instant::now();
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed.id == second.id,
        "after node {} resumed, leadership moved from {second} to {agreed}",
        first.id
    );
    report(&format!(
        "sigstop leader: resumed node {} follows {agreed} after {} ms",
        first.id,
        resumed.elapsed().as_millis()
    ));
    cluster.finish()
}

/// Cut the leader off with DROP rules: it stops reporting leader within a bound (check-quorum
/// steps it down within two election timeouts), the other two elect a new leader, and once
/// healed the old leader follows it.
pub fn partitioned_leader_steps_down_and_follows_after_heal() -> Result<()> {
    let mut cluster = Cluster::launch(
        "partitioned_leader_steps_down_and_follows_after_heal",
        ClusterSpec::three_voters(),
    )?;
    let all = cluster.ids();
    let first = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;

    cluster.isolate(first.id)?;
    let isolated = Instant::now();
    // Two election timeouts (2 s) is what check-quorum promises; 5 s leaves room for load.
    let step_down_deadline = Duration::from_secs(5);
    let stepped_down = cluster.wait_until_not_leader(first.id, step_down_deadline)?;
    report(&format!(
        "partition: isolated leader {first} stepped down after {} ms ({stepped_down})",
        isolated.elapsed().as_millis()
    ));
    let others = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&others, ELECTION_DEADLINE)?;
    report(&format!(
        "partition: majority agreed on {second} {} ms after the cut",
        isolated.elapsed().as_millis()
    ));
    ensure!(
        second.id != first.id,
        "the isolated node is still the leader"
    );
    ensure!(
        second.term > first.term,
        "new leader {second} is not in a later term than {first}"
    );
    let isolated_status = cluster.status(first.id)?;
    ensure!(
        isolated_status.role != Role::Leader,
        "the isolated old leader claims leadership again: {isolated_status}"
    );

    cluster.heal(first.id)?;
    let healed = Instant::now();
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed.id == second.id,
        "after healing node {}, leadership moved from {second} to {agreed}",
        first.id
    );
    report(&format!(
        "partition: healed node {} follows {agreed} after {} ms",
        first.id,
        healed.elapsed().as_millis()
    ));
    cluster.finish()
}

/// SIGSTOP a follower: the leader and its term do not change while it is paused, and after
/// SIGCONT it rejoins under the same leader in the same term.
pub fn sigstop_follower_keeps_leader() -> Result<()> {
    let spec = ClusterSpec::three_voters();
    let quiet = 3 * spec.election_timeout;
    let mut cluster = Cluster::launch("sigstop_follower_keeps_leader", spec)?;
    let all = cluster.ids();
    let leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    let follower = cluster.others(leader.id)[0];

    cluster.pause(follower)?;
    let rest: Vec<u64> = all.iter().copied().filter(|&id| id != follower).collect();
    cluster.assert_leader_stable(&rest, leader, quiet)?;

    cluster.resume(follower)?;
    let resumed = Instant::now();
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == leader,
        "after follower {follower} resumed, leadership changed from {leader} to {agreed}"
    );
    report(&format!(
        "sigstop follower: node {follower} paused {} ms, rejoined {leader} after {} ms",
        quiet.as_millis(),
        resumed.elapsed().as_millis()
    ));
    cluster.finish()
}

/// SIGTERM the leader: it hands leadership to a peer and exits 0, and the others agree on the
/// new leader within 2 s of its exit. The election timeout is 3 s here, so that a plain
/// election (which cannot start before an election timeout has passed without heartbeats)
/// cannot meet the bound: only a hand-off does.
pub fn sigterm_leader_hands_off() -> Result<()> {
    let spec = ClusterSpec::three_voters().with_election_timeout(Duration::from_secs(3));
    let mut cluster = Cluster::launch("sigterm_leader_hands_off", spec)?;
    let all = cluster.ids();
    // With a 3 s election timeout the first election takes 3–6 s plus load.
    let first = cluster.wait_for_single_leader(&all, Duration::from_secs(20))?;

    let exit = cluster.terminate(first.id, Duration::from_secs(10))?;
    ensure!(
        exit.status.success(),
        "leader node {} exited with {} after SIGTERM, expected 0",
        first.id,
        exit.status
    );
    let bound = Duration::from_secs(2);
    let others = cluster.others(first.id);
    let remaining = bound.saturating_sub(exit.at.elapsed());
    let second =
        cluster.wait_for_single_leader_every(&others, remaining, Duration::from_millis(10))?;
    let after_exit = exit.at.elapsed();
    report(&format!(
        "sigterm: leader {first} exited {} ms after SIGTERM; {second} agreed {} ms after the exit",
        exit.after.as_millis(),
        after_exit.as_millis()
    ));
    ensure!(
        second.term > first.term,
        "new leader {second} is not in a later term than {first}"
    );
    cluster.finish()
}
