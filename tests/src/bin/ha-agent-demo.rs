//! The demo: the AWS emulator (moto) comes up, a VPC, one instance per node, an Elastic IP, a
//! Route53 record and a leader parameter are created in it, and three `ha-agent run` processes
//! in network namespaces elect a leader, which moves every resource to itself. The leader is
//! SIGKILLed; the time until the Elastic IP is on the new leader is measured through the
//! emulator's API (DescribeAddresses every 10 ms); the old node is restarted and follows. Uses
//! the end-to-end harness. Needs root and what `bash scripts/setup` installs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ha_agent_e2e::{wall_clock, Cluster, ClusterSpec, Holders, Role};

/// How often the survivors' statuses are polled while waiting for an election.
const POLL: Duration = Duration::from_millis(20);
/// How often DescribeAddresses is polled while the failover is timed.
const EIP_POLL: Duration = Duration::from_millis(10);
const ELECTION_DEADLINE: Duration = Duration::from_secs(10);
const RESOURCE_DEADLINE: Duration = Duration::from_secs(20);

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

/// The three holders in one indented block.
fn show_holders(cluster: &Cluster, holders: &Holders) -> Result<()> {
    let world = cluster.aws()?;
    show(&format!(
        "Elastic IP {} ({}):  {}\nrecord {} A:  {}\nleader parameter {}:  {}{}",
        world.public_ip,
        world.allocation_id,
        holders.elastic_ip,
        world.record_name,
        holders.record,
        world.leader_parameter,
        holders.leader_parameter,
        holders
            .leader_parameter_term
            .map(|term| format!(" (term {term})"))
            .unwrap_or_default()
    ));
    Ok(())
}

fn run() -> Result<()> {
    let spec = ClusterSpec::three_voters().with_aws();
    say(&format!(
        "Starting the AWS emulator (moto), three network namespaces on a bridge, and a fault proxy \
         on the bridge (heartbeat {} ms, election timeout {} ms)",
        spec.heartbeat_interval.as_millis(),
        spec.election_timeout.as_millis()
    ));
    let mut cluster = Cluster::new("demo", spec)?;
    let all = cluster.ids();
    {
        let world = cluster.aws()?;
        say(&format!(
            "Emulator at {}; the agents reach it through the fault proxy at {}, which records \
             every claim",
            world.emulator().endpoint(),
            world.agent_endpoint()
        ));
        say(&format!(
            "Created in the emulator with the AWS SDK: VPC {} with subnet {} ({}), Elastic IP {} \
             ({}), hosted zone {} ({})",
            world.vpc_id,
            world.subnet_id,
            cluster.network().subnet(),
            world.public_ip,
            world.allocation_id,
            world.zone_name,
            world.zone_id
        ));
        for &id in &all {
            let node = world.node(id)?;
            say(&format!(
                "node {id}: instance {}, interface {}, private IP {} (namespace {}), config {}",
                node.instance_id,
                node.network_interface_id,
                node.private_ip,
                cluster.network().namespace(id),
                cluster.config_path(id)?.display()
            ));
        }
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
    let holders = cluster.wait_for_resources_on(first.id, Some(first.term), RESOURCE_DEADLINE)?;
    say(&format!(
        "Every resource points at node {} ({} ms after start), as the emulator's API says \
         (DescribeAddresses, ListResourceRecordSets, GetParameter):",
        first.id,
        started.elapsed().as_millis()
    ));
    show_holders(&cluster, &holders)?;
    cluster.wait_for_status_in_place(first.id, RESOURCE_DEADLINE)?;
    say(&format!(
        "ha-agent status on the leader (node {}), once it has observed its resources:",
        first.id
    ));
    show(&cluster.status_text(first.id)?);

    let pid = cluster.pid(first.id)?.unwrap_or_default();
    say(&format!(
        "Killing the leader, node {} (pid {pid}), with SIGKILL; polling DescribeAddresses every {} ms",
        first.id,
        EIP_POLL.as_millis()
    ));
    cluster.kill(first.id)?;
    let killed = Instant::now();
    let killed_wall = wall_clock();
    let eip_holder = cluster.wait_for_elastic_ip_to_leave(first.id, RESOURCE_DEADLINE, EIP_POLL)?;
    let failover = killed.elapsed();
    say(&format!(
        "The Elastic IP is on node {eip_holder}, {} ms after the SIGKILL",
        failover.as_millis()
    ));
    let survivors = cluster.others(first.id);
    let second = cluster.wait_for_single_leader_every(&survivors, ELECTION_DEADLINE, POLL)?;
    ensure!(
        second.id != first.id && second.term > first.term && second.id == eip_holder,
        "the survivors report {second}, not the new holder node {eip_holder} in a term after {first}"
    );
    let holders = cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    say(&format!(
        "Every resource points at the new leader, node {} (term {}), {} ms after the SIGKILL:",
        second.id,
        second.term,
        killed.elapsed().as_millis()
    ));
    show_holders(&cluster, &holders)?;
    let claims = {
        let world = cluster.aws()?;
        let claims: Vec<_> = world
            .claims()?
            .into_iter()
            .filter(|claim| claim.arrived > killed_wall)
            .collect();
        world.describe_claims(&claims, killed_wall)
    };
    say("Claims the fault proxy recorded since the SIGKILL (arrived .. answered, ms after it):");
    println!("{claims}");
    cluster.wait_for_status_in_place(second.id, RESOURCE_DEADLINE)?;
    say(&format!(
        "ha-agent status on the new leader (node {}), once it has observed its resources:",
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
        "Node {} rejoined as a follower of node {} ({} ms after restart); checking for 2 s that \
         the resources stay and nobody claims",
        first.id,
        second.id,
        restarted.elapsed().as_millis()
    ));
    cluster.assert_resources_stable(second.id, Duration::from_secs(2))?;
    show(&cluster.status_text(first.id)?);

    let election_timeout = cluster.spec().election_timeout;
    say("Cleaning up: stopping the agents and the fault proxy, removing namespaces, bridge and files");
    cluster.finish()?;
    say(&format!(
        "Done. After SIGKILL of the leader the Elastic IP was on the new leader in {} ms \
         (election timeout {} ms; DescribeAddresses polled every {} ms).",
        failover.as_millis(),
        election_timeout.as_millis(),
        EIP_POLL.as_millis()
    ));
    Ok(())
}
