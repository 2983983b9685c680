//! The demo: three `ha-agent run` processes in network namespaces elect a leader; the leader is
//! SIGKILLed; the time until the survivors agree on a new leader is measured; the old leader
//! is restarted and rejoins as a follower. Uses the end-to-end harness. Needs root.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ha_agent_e2e::{Cluster, ClusterSpec, Role};

/// How often the survivors' statuses are polled while measuring the failover.
const POLL: Duration = Duration::from_millis(20);
const ELECTION_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("==> demo FAILED: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    println!("==> {line}");
}

fn show(text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            println!();
        } else {
            println!("    {line}");
        }
    }
}

fn run() -> Result<()> {
    let spec = ClusterSpec::three_voters();
    say(&format!(
        "Creating three network namespaces on a bridge, one per node (heartbeat {} ms, election timeout {} ms)",
        spec.heartbeat_interval.as_millis(),
        spec.election_timeout.as_millis()
    ));
    let mut cluster = Cluster::new("demo", spec)?;
    let all = cluster.ids();
    for &id in &all {
        say(&format!(
            "node {id}: namespace {}, address {}, config {}",
            cluster.network().namespace(id),
            cluster.network().address(id),
            cluster.config_path(id)?.display()
        ));
    }

    say(&format!(
        "Starting three agents: ip netns exec <ns> {} run --config <config>",
        cluster.binary().display()
    ));
    let started = Instant::now();
    for &id in &all {
        cluster.start(id)?;
    }
    let first = cluster.wait_for_single_leader_every(&all, ELECTION_DEADLINE, POLL)?;
    say(&format!(
        "All three agree: node {} is leader in term {} ({} ms after start)",
        first.id,
        first.term,
        started.elapsed().as_millis()
    ));
    say(&format!(
        "ha-agent status on the leader (node {}):",
        first.id
    ));
    show(&cluster.status_text(first.id)?);

    let pid = cluster.pid(first.id)?.unwrap_or_default();
    say(&format!(
        "Killing the leader, node {} (pid {pid}), with SIGKILL",
        first.id
    ));
    cluster.kill(first.id)?;
    let killed = Instant::now();
    let survivors = cluster.others(first.id);
    let second = cluster.wait_for_single_leader_every(&survivors, ELECTION_DEADLINE, POLL)?;
    let failover = killed.elapsed();
    ensure!(
        second.id != first.id && second.term > first.term,
        "the survivors report {second}, not a new leader after {first}"
    );
    say(&format!(
        "Survivors {survivors:?} agree: node {} is leader in term {}, {} ms after the kill",
        second.id,
        second.term,
        failover.as_millis()
    ));
    say(&format!(
        "ha-agent status on the new leader (node {}):",
        second.id
    ));
    show(&cluster.status_text(second.id)?);

    say(&format!(
        "Restarting node {} (its state directory kept)",
        first.id
    ));
    cluster.start(first.id)?;
    let restarted = Instant::now();
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let agreed = cluster.wait_for_single_leader_every(&all, ELECTION_DEADLINE, POLL)?;
    ensure!(
        agreed.id == second.id,
        "after the restart leadership moved from {second} to {agreed}"
    );
    let old = cluster.status(first.id)?;
    ensure!(
        old.role == Role::Follower,
        "node {} reports {old}",
        first.id
    );
    say(&format!(
        "Node {} rejoined as a follower of node {} ({} ms after restart):",
        first.id,
        second.id,
        restarted.elapsed().as_millis()
    ));
    show(&cluster.status_text(first.id)?);

    let election_timeout = cluster.spec().election_timeout;
    say("Cleaning up: stopping the agents, removing namespaces, bridge and files");
    cluster.finish()?;
    say(&format!(
        "Done. Failover after SIGKILL of the leader took {} ms (election timeout {} ms, polled every {} ms).",
        failover.as_millis(),
        election_timeout.as_millis(),
        POLL.as_millis()
    ));
    Ok(())
}
