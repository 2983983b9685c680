//! The end-to-end scenarios against the AWS emulator, one function per `aws_*` test in
//! `tests/e2e.rs`.
//!
//! Each test builds its own AWS world in the shared emulator (see [`crate::aws`]), and every
//! check of where a resource points asks the emulator's API (DescribeAddresses,
//! ListResourceRecordSets, GetParameter), never the agents. Who claimed what, and when, comes
//! from the fault proxy's claim log: a claim's sender is the node whose namespace address it
//! came from, and [`AwsWorld::attribute`] fails unless that is also the node the claim names
//! (the interface of an AssociateAddress, the value of a record UPSERT, the node id in the
//! leader document of a PutParameter).
//!
//! Correctness is asserted; timings are printed with [`report`]. Deadlines are generous for a
//! loaded two-core machine.
//!
//! The agents run at their default timing (heartbeat 100 ms, election timeout 1 s), where the
//! leader's lease lasts at most (1 s − 100 ms) × 0.95 − 50 ms = 805 ms from the moment it sent
//! the last heartbeat round that a majority acknowledged. Once the leader is cut off, that
//! round was sent before the cut, so its lease ends within 805 ms of the cut; the partition
//! test takes [`LEASE_BOUND`] = 1 s after the cut as the end of the lease, leaving 195 ms for
//! scheduling and for the time between a claim leaving the agent and the proxy stamping it.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::aws::{wall_clock, AwsWorld, Claim, Faults};
use crate::cluster::{Cluster, ClusterSpec};
use crate::scenarios::ELECTION_DEADLINE;
use crate::status::{Leader, Role};
use crate::system::report;

/// How long a new leader may take to put every resource in place once it leads.
pub const RESOURCE_DEADLINE: Duration = Duration::from_secs(20);
/// The same under injected faults (each call may fail and back off up to 5 s).
const FAULTY_RESOURCE_DEADLINE: Duration = Duration::from_secs(60);
/// How often DescribeAddresses is polled while a failover is timed.
pub const ELASTIC_IP_POLL: Duration = Duration::from_millis(10);
/// After a cut, the old leader's lease has surely ended by then (805 ms at the defaults, plus
/// margin; see the module docs).
pub const LEASE_BOUND: Duration = Duration::from_secs(1);
/// A claim the agent wrote just before SIGSTOP can be stamped by a busy proxy a little later.
const STOP_GRACE: Duration = Duration::from_millis(100);
/// How long the partition test keeps taking the Elastic IP away after the cut, at least: past
/// the two election timeouts within which check-quorum makes the old leader step down (and
/// longer if it has not yet).
const STEAL_WINDOW: Duration = Duration::from_millis(2500);
/// By then the isolated old leader must have stepped down (two election timeouts, plus room
/// for load).
const STEP_DOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How long nothing may move once everything is back.
const QUIET_PERIOD: Duration = Duration::from_secs(5);

/// Launches three voters with an AWS world; waits for a leader and for every resource to
/// point at it.
fn launch_on_aws(test: &str, spec: ClusterSpec) -> Result<(Cluster, Leader)> {
    let mut cluster = Cluster::launch(test, spec.with_aws())?;
    let started = Instant::now();
    let all = cluster.ids();
    let leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    let elected = started.elapsed();
    cluster.wait_for_resources_on(leader.id, Some(leader.term), RESOURCE_DEADLINE)?;
    report(&format!(
        "{test}: {leader} elected {} ms after start, every resource on it after {} ms",
        elected.as_millis(),
        started.elapsed().as_millis()
    ));
    Ok((cluster, leader))
}

/// Every claim so far, attributed to its node (see the module docs).
fn attributed_claims(world: &AwsWorld) -> Result<Vec<(u64, Claim)>> {
    world.attribute(&world.claims()?)
}

/// Fails unless `new` names a different node than `old`, in a later term.
fn ensure_new_leader(old: Leader, new: Leader) -> Result<()> {
    ensure!(new.id != old.id, "{old} is still the leader");
    ensure!(
        new.term > old.term,
        "new leader {new} is not in a later term than {old}"
    );
    Ok(())
}

/// SIGKILL the leader: the Elastic IP, the record and the leader parameter all move to the new
/// leader (timed from the kill to the Elastic IP seen elsewhere in DescribeAddresses); the old
/// leader, restarted, follows and takes nothing back.
pub fn aws_sigkill_leader_moves_every_resource() -> Result<()> {
    let test = "aws_sigkill_leader_moves_every_resource";
    let (mut cluster, first) = launch_on_aws(test, ClusterSpec::three_voters())?;

    cluster.kill(first.id)?;
    let killed = Instant::now();
    let killed_wall = wall_clock();
    let eip_holder =
        cluster.wait_for_elastic_ip_to_leave(first.id, RESOURCE_DEADLINE, ELASTIC_IP_POLL)?;
    let eip_after = killed.elapsed();
    let survivors = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&survivors, ELECTION_DEADLINE)?;
    ensure_new_leader(first, second)?;
    let holders = cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    let all_after = killed.elapsed();
    ensure!(
        eip_holder == second.id,
        "the Elastic IP first went to node {eip_holder}, but the survivors agree on {second}"
    );
    report(&format!(
        "{test}: leader {first} SIGKILLed; Elastic IP on node {eip_holder} after {} ms \
         (DescribeAddresses every {} ms); every resource on {second} after {} ms ({holders})",
        eip_after.as_millis(),
        ELASTIC_IP_POLL.as_millis(),
        all_after.as_millis()
    ));

    let claims = attributed_claims(cluster.aws()?)?;
    let late: Vec<&(u64, Claim)> = claims
        .iter()
        .filter(|(node, claim)| *node == first.id && claim.arrived > killed_wall)
        .collect();
    ensure!(
        late.is_empty(),
        "the killed node {} made claims after its death: {late:?}",
        first.id
    );

    cluster.start(first.id)?;
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let all = cluster.ids();
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == second,
        "after node {} restarted, leadership moved from {second} to {agreed}",
        first.id
    );
    cluster.assert_resources_stable(second.id, Duration::from_secs(2))?;
    report(&format!(
        "{test}: restarted node {} follows {second}; the resources stayed, no claim",
        first.id
    ));
    cluster.finish()
}

/// SIGSTOP the leader: every resource moves to the new leader; after SIGCONT the old leader
/// follows, and the claim log shows no claim by it after it was stopped (its lease ran out
/// while it was stopped, and it must not act on the reconcile timer that fires on resume).
pub fn aws_sigstop_leader_moves_every_resource() -> Result<()> {
    let test = "aws_sigstop_leader_moves_every_resource";
    let (mut cluster, first) = launch_on_aws(test, ClusterSpec::three_voters())?;

    cluster.pause(first.id)?;
    let stopped = Instant::now();
    let stopped_wall = wall_clock();
    let eip_holder =
        cluster.wait_for_elastic_ip_to_leave(first.id, RESOURCE_DEADLINE, ELASTIC_IP_POLL)?;
    let eip_after = stopped.elapsed();
    let others = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&others, ELECTION_DEADLINE)?;
    ensure_new_leader(first, second)?;
    cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    report(&format!(
        "{test}: leader {first} SIGSTOPped; Elastic IP on node {eip_holder} after {} ms; every \
         resource on {second} after {} ms",
        eip_after.as_millis(),
        stopped.elapsed().as_millis()
    ));

    cluster.resume(first.id)?;
    let resumed = Instant::now();
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let all = cluster.ids();
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == second,
        "after node {} resumed, leadership moved from {second} to {agreed}",
        first.id
    );
    cluster.assert_resources_stable(second.id, Duration::from_secs(2))?;

    let claims = attributed_claims(cluster.aws()?)?;
    let boundary = stopped_wall + STOP_GRACE.as_secs_f64();
    let late: Vec<Claim> = claims
        .iter()
        .filter(|(node, claim)| *node == first.id && claim.arrived > boundary)
        .map(|(_, claim)| claim.clone())
        .collect();
    if !late.is_empty() {
        let world = cluster.aws()?;
        let listing = world.describe_claims(&late, stopped_wall);
        bail!(cluster.diagnose(&format!(
            "the old leader node {} claimed after it was stopped (ms after SIGSTOP):\n{listing}",
            first.id
        )));
    }
    let last_old = claims
        .iter()
        .filter(|(node, _)| *node == first.id)
        .map(|(_, claim)| claim.arrived)
        .fold(f64::NEG_INFINITY, f64::max);
    report(&format!(
        "{test}: node {} resumed, follows {second} after {} ms; its last claim arrived {:.0} ms \
         before SIGSTOP, none after",
        first.id,
        resumed.elapsed().as_millis(),
        (stopped_wall - last_old) * 1000.0
    ));
    cluster.finish()
}

/// Cut the leader off from its peers (not from the emulator): the new leader holds every
/// resource; the claim log shows no claim by the old leader that arrived after its lease
/// ended (cut + [`LEASE_BOUND`]), and every claim by the new leader arrived after the old
/// leader's last claim was answered. To give the old leader something to claim, the Elastic IP
/// is disassociated behind the agents' backs just before the cut and every 100 ms for 2.5 s
/// after it, and on until the old leader has stepped down, and the agents re-check their
/// resources every second. After the heal, nothing moves and nobody claims for 5 s.
pub fn aws_partitioned_leader_stops_claiming_after_its_lease() -> Result<()> {
    let test = "aws_partitioned_leader_stops_claiming_after_its_lease";
    let spec = ClusterSpec::three_voters().with_reconcile_interval(Duration::from_secs(1));
    let (mut cluster, first) = launch_on_aws(test, spec)?;

    let stolen = cluster.aws()?.disassociate_elastic_ip()?;
    ensure!(stolen, "the Elastic IP was not associated before the cut");
    cluster.isolate(first.id)?;
    let cut = Instant::now();
    let cut_wall = wall_clock();
    let reachable = cluster
        .aws()?
        .proxy_reachable_from(cluster.network(), first.id)?;
    ensure!(
        reachable,
        "the isolated node {} cannot reach the fault proxy: the cut must leave the emulator \
         reachable",
        first.id
    );

    // Keep taking the Elastic IP away while the old leader may still think it leads, so that an
    // old leader that ignored its lease would claim it back, late, in full view of the proxy.
    let steals = steal_while_leading(&mut cluster, first.id, cut)?;
    let others = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&others, ELECTION_DEADLINE)?;
    ensure_new_leader(first, second)?;
    cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    let converged = cut.elapsed();
    let old_status = cluster.status(first.id)?;
    ensure!(
        old_status.role != Role::Leader,
        "the isolated old leader claims leadership again: {old_status}"
    );
    let drops = cluster.network().drop_counts(first.id)?;
    ensure!(
        drops.inbound > 0 && drops.outbound > 0,
        "the cut dropped no traffic between node {} and its peers: {drops:?}",
        first.id
    );

    let claims = attributed_claims(cluster.aws()?)?;
    let lease_end = cut_wall + LEASE_BOUND.as_secs_f64();
    let old: Vec<&Claim> = claims
        .iter()
        .filter(|(node, _)| *node == first.id)
        .map(|(_, claim)| claim)
        .collect();
    let new: Vec<&Claim> = claims
        .iter()
        .filter(|(node, _)| *node == second.id)
        .map(|(_, claim)| claim)
        .collect();
    let all_claims: Vec<Claim> = claims.iter().map(|(_, claim)| claim.clone()).collect();
    let listing = cluster.aws()?.describe_claims(&all_claims, cut_wall);
    let old_last = old
        .last()
        .context("the old leader never claimed anything")?;
    let old_last_answered = old
        .iter()
        .map(|claim| claim.answered)
        .fold(f64::NEG_INFINITY, f64::max);
    let new_first = new
        .first()
        .context("the new leader made no claim, yet holds every resource")?;
    let stale: Vec<&&Claim> = old
        .iter()
        .filter(|claim| claim.arrived > lease_end)
        .collect();
    if !stale.is_empty() {
        bail!(cluster.diagnose(&format!(
            "the old leader node {} claimed after its lease ended (cut + {} ms); claims, ms \
             relative to the cut:\n{listing}",
            first.id,
            LEASE_BOUND.as_millis()
        )));
    }
    if new_first.arrived <= old_last_answered {
        bail!(cluster.diagnose(&format!(
            "the claims of the old leader node {} and the new leader node {} interleave; \
             claims, ms relative to the cut:\n{listing}",
            first.id, second.id
        )));
    }
    let ms = |t: f64| (t - cut_wall) * 1000.0;
    report(&format!(
        "{test}: cut {first} at 0 ms (lease bound +{} ms; Elastic IP taken away {steals} times \
         until at least +{} ms); its last claim ({}) arrived {:+.0} ms, answered {:+.0} ms; new leader \
         {second}'s first claim ({}) arrived {:+.0} ms; every resource on it at {:+} ms; claims \
         by the old leader after the cut: {}",
        LEASE_BOUND.as_millis(),
        STEAL_WINDOW.as_millis(),
        old_last.action,
        ms(old_last.arrived),
        ms(old_last_answered),
        new_first.action,
        ms(new_first.arrived),
        converged.as_millis(),
        old.iter().filter(|claim| claim.arrived > cut_wall).count()
    ));

    cluster.heal(first.id)?;
    cluster.wait_for_follower_of(first.id, second.id, ELECTION_DEADLINE)?;
    let all = cluster.ids();
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == second,
        "after the heal, leadership moved from {second} to {agreed}"
    );
    cluster.assert_resources_stable(second.id, QUIET_PERIOD)?;
    cluster.assert_leader_stable(&all, second, Duration::from_millis(500))?;
    report(&format!(
        "{test}: healed; node {} follows {second}; nothing moved and nobody claimed for {} ms",
        first.id,
        QUIET_PERIOD.as_millis()
    ));
    cluster.finish()
}

/// Disassociates the Elastic IP (when associated) every 100 ms from `cut` until at least
/// [`STEAL_WINDOW`] after it and until node `old` no longer reports role leader; fails if it
/// still does [`STEP_DOWN_DEADLINE`] after the cut. Returns how many times the address was
/// taken away.
fn steal_while_leading(cluster: &mut Cluster, old: u64, cut: Instant) -> Result<u32> {
    let interval = Duration::from_millis(100);
    let rounds = STEP_DOWN_DEADLINE.as_millis() / interval.as_millis() + 2;
    let mut steals = 0;
    for _ in 0..rounds {
        if cluster.aws()?.disassociate_elastic_ip()? {
            steals += 1;
        }
        let status = cluster.status(old)?;
        if cut.elapsed() >= STEAL_WINDOW && status.role != Role::Leader {
            cluster.note(format!(
                "harness: took the Elastic IP away {steals} times during the partition"
            ));
            return Ok(steals);
        }
        if cut.elapsed() >= STEP_DOWN_DEADLINE {
            bail!(cluster.diagnose(&format!(
                "the isolated old leader still reports role leader {} ms after the cut: {status}",
                cut.elapsed().as_millis()
            )));
        }
        std::thread::sleep(interval);
    }
    bail!(cluster.diagnose(&format!(
        "the isolated old leader node {old} did not step down within {} ms of the cut",
        STEP_DOWN_DEADLINE.as_millis()
    )))
}

/// With the proxy failing 30 % of all AWS requests with 503 and throttling 20 %, SIGKILL the
/// leader: every resource still reaches the new leader, stays there while the faults go on
/// (the agents re-check every second here, so that many requests meet the faults), and no
/// agent exits.
pub fn aws_throttling_and_5xx_still_converge() -> Result<()> {
    let test = "aws_throttling_and_5xx_still_converge";
    let spec = ClusterSpec::three_voters().with_reconcile_interval(Duration::from_secs(1));
    let (mut cluster, first) = launch_on_aws(test, spec)?;
    let faults = Faults {
        error_rate: 0.3,
        throttle_rate: 0.2,
        delay_ms: 0,
    };
    cluster.aws()?.set_faults(faults)?;
    let (errors_before, throttles_before) = cluster.aws()?.injected_faults()?;

    cluster.kill(first.id)?;
    let killed = Instant::now();
    let survivors = cluster.others(first.id);
    let second = cluster.wait_for_single_leader(&survivors, ELECTION_DEADLINE)?;
    ensure_new_leader(first, second)?;
    cluster.wait_for_resources_on(second.id, Some(second.term), FAULTY_RESOURCE_DEADLINE)?;
    let converged = killed.elapsed();
    cluster.assert_leader_stable(&survivors, second, Duration::from_secs(3))?;
    let holders = cluster.aws()?.holders()?;
    ensure!(
        holders.all_on(second.id, Some(second.term)),
        "the resources left the leader {second} under faults: {holders}"
    );
    let (errors, throttles) = cluster.aws()?.injected_faults()?;
    let (errors, throttles) = (errors - errors_before, throttles - throttles_before);
    ensure!(
        errors + throttles > 0,
        "the proxy injected no fault after the kill: the test did not exercise the retries"
    );
    let claims = attributed_claims(cluster.aws()?)?;
    let attempts = claims.iter().filter(|(node, _)| *node == second.id).count();
    let failed = claims
        .iter()
        .filter(|(node, claim)| *node == second.id && claim.status != 200)
        .count();
    report(&format!(
        "{test}: with {:.0} % 503s and {:.0} % throttling, every resource on {second} {} ms after \
         the SIGKILL of {first}, kept for 3 s; {errors} 503s and {throttles} throttles injected; \
         {attempts} claims by the new leader, {failed} of them failed",
        faults.error_rate * 100.0,
        faults.throttle_rate * 100.0,
        converged.as_millis()
    ));

    cluster.aws()?.set_faults(Faults::default())?;
    cluster.finish()
}

/// `check-config` accepts the generated AWS configs (and shows the emulator endpoint and the
/// resources) and rejects broken variants; the harness refuses to start an agent without a
/// local endpoint; once running, `ha-agent status --json` shows the emulator endpoint on every
/// node and every resource in place on the leader.
pub fn aws_check_config_rejects_and_status_reports_the_emulator() -> Result<()> {
    let test = "aws_check_config_rejects_and_status_reports_the_emulator";
    let mut cluster = Cluster::new(test, ClusterSpec::three_voters().with_aws())?;
    let endpoint = cluster.aws()?.agent_endpoint();
    let allocation_id = cluster.aws()?.allocation_id.clone();
    let zone_id = cluster.aws()?.zone_id.clone();
    for id in cluster.ids() {
        let output = check_config(&cluster, cluster.config_path(id)?)?;
        ensure!(
            output.0
                && output.1.contains("ok")
                && output.1.contains(&endpoint)
                && output.1.contains(&allocation_id)
                && output.1.contains(&zone_id),
            "check-config should accept node {id}'s config and show the endpoint {endpoint}, \
             the Elastic IP {allocation_id} and the zone {zone_id}:\n{}",
            output.1
        );
    }

    // check-config rejects broken AWS settings, naming the key.
    let original = std::fs::read_to_string(cluster.config_path(1)?)?;
    let broken = [
        (
            "a call timeout that does not fit the lease",
            original.replace("[aws]\n", "[aws]\ncall-timeout = \"2s\"\n"),
            "aws.call-timeout",
        ),
        (
            "a malformed allocation id",
            original.replace(&allocation_id, "eip-not-an-allocation"),
            "elastic-ip[0].allocation-id",
        ),
        (
            "an unknown key in [aws]",
            original.replace("[aws]\n", "[aws]\nendpoint = \"http://127.0.0.1:1\"\n"),
            "unknown field `endpoint`",
        ),
    ];
    for (what, text, key) in &broken {
        ensure!(text != &original, "the {what} variant changed nothing");
        let path = cluster.dir().join("broken.toml");
        std::fs::write(&path, text)?;
        let (ok, output) = check_config(&cluster, &path)?;
        ensure!(
            !ok && output.contains(key),
            "check-config should reject {what}, naming {key}:\n{output}"
        );
    }

    // The harness itself refuses configs that could reach real AWS.
    let refused = [
        (
            "no endpoint",
            original
                .lines()
                .filter(|line| !line.starts_with("endpoint-url"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "the real AWS endpoint",
            original.replace(&endpoint, "https://ec2.us-east-1.amazonaws.com"),
        ),
        (
            "another subnet's bridge",
            original.replace(&endpoint, "http://10.77.255.1:5000"),
        ),
    ];
    for (what, text) in &refused {
        ensure!(text != &original, "the {what} variant changed nothing");
        cluster.write_config(1, text)?;
        let refusal = cluster.start(1);
        ensure!(
            refusal.is_err(),
            "the harness started an agent with {what} in its config"
        );
        ensure!(cluster.pid(1)?.is_none(), "a refused start left a process");
        let message = format!("{:#}", refusal.err().unwrap_or_else(|| anyhow::anyhow!("")));
        ensure!(
            message.contains("endpoint-url"),
            "the refusal of {what} should name aws.endpoint-url: {message}"
        );
    }
    cluster.write_config(1, &original)?;

    for id in cluster.ids() {
        cluster.start(id)?;
    }
    let all = cluster.ids();
    let leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    cluster.wait_for_resources_on(leader.id, Some(leader.term), RESOURCE_DEADLINE)?;
    let status = cluster.wait_for_status_in_place(leader.id, RESOURCE_DEADLINE)?;
    let kinds: Vec<&str> = status.resources.iter().map(|r| r.kind.as_str()).collect();
    ensure!(
        kinds == ["elastic-ip", "route53-record", "leader-parameter"],
        "the leader's status lists the resources {kinds:?}: {}",
        status.raw
    );
    ensure!(
        status.resources[0].id == allocation_id && status.resources[1].id.contains(&zone_id),
        "the leader's status names other resources: {}",
        status.raw
    );
    ensure!(
        status.lease_remaining_ms.is_some_and(|ms| ms > 0),
        "the leader reports no lease: {}",
        status.raw
    );
    for id in cluster.ids() {
        let status = cluster.status(id)?;
        ensure!(
            status.aws_endpoint.as_deref() == Some(endpoint.as_str()),
            "node {id} reports aws_endpoint {:?}, expected {endpoint}: {}",
            status.aws_endpoint,
            status.raw
        );
    }
    let text = cluster.status_text(leader.id)?;
    ensure!(
        text.contains(&endpoint) && text.contains(&allocation_id),
        "`ha-agent status` on the leader should show the endpoint and the Elastic IP:\n{text}"
    );
    report(&format!(
        "{test}: leader {leader} reports every resource in place; every node reports \
         aws_endpoint {endpoint}"
    ));
    cluster.finish()
}

/// Runs `ha-agent check-config --config PATH`: (exit success, stdout and stderr together).
fn check_config(cluster: &Cluster, path: &std::path::Path) -> Result<(bool, String)> {
    let mut command = std::process::Command::new(cluster.binary());
    command.arg("check-config").arg("--config").arg(path);
    let output = crate::command::run(&mut command, None, Duration::from_secs(10))?;
    Ok((
        output.status.success(),
        format!("{}{}", output.stdout, output.stderr),
    ))
}
