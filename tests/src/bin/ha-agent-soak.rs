//! The fault soak (a command; CI runs a short one): three real `ha-agent run` processes in
//! network namespaces, each with a real local service (a tiny HTTP server) and an http check on
//! it, against the AWS emulator behind the fault proxy, under a seeded random schedule of
//! faults, in three layers that overlap:
//!
//! - one node or network fault at a time: SIGKILL + restart, SIGSTOP + SIGCONT, SIGTERM
//!   restart, a symmetric partition, one-way partitions (the node can send to its peers but not
//!   receive, and the reverse; nftables DROP), probabilistic packet loss (nftables `numgen
//!   random` rules; this kernel has no `netem`), or emulator errors, throttling and delay
//!   through the fault proxy;
//! - during a quarter of the node and network faults, emulator faults as well;
//! - health-check failures: a node's service is killed for 3–15 s, across faults of the first
//!   two layers (at most one service down at a time, so a healthy node always exists).
//!
//! After every fault and heal it checks, from outside the agents:
//!
//! - within a bound after the group heals, the nodes agree on one leader, the leader reports
//!   itself healthy (a healthy node always exists), and every resource points at it (the
//!   emulator's API);
//! - no agent exited on its own (a crash; systemd would restart it), and a SIGTERM ends an
//!   agent with exit status 0.
//!
//! And over the fault proxy's claim log:
//!
//! - at no instant do two nodes have claims in flight (arrival..answer overlaps);
//! - no claim from a node cut off from its peers (any direction) or paused arrives after the
//!   fault + 1 s (its quorum lease, 805 ms at the defaults, has ended) and before the heal;
//! - the Elastic IP moves (successful AssociateAddress by a different node than the last) no
//!   more often than leadership changes (distinct terms in the leader parameter's claims and
//!   in the leaders observed);
//! - the leader parameter's writes, in arrival order, never go back to an older term.
//!
//! The agents run at their defaults but for `aws.reconcile-interval = 1s` (resources converge
//! faster after emulator faults) and `cluster.min-hand-off-interval = 5s` (an unhealthy leader
//! that handed off for health less than 30 s ago would otherwise stay, degraded, past the
//! convergence bound); the check probes every 500 ms, rise 2, fall 2.
//!
//! Usage: ha-agent-soak [--minutes N (2)] [--seed S (time)] ; prints the seed, the timeline,
//! totals and every violation with the seed to replay. Exit 1 on any violation.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ha_agent_e2e::health_scenarios::{add_web_check, wait_for_all_health, WebCheck};
use ha_agent_e2e::{wall_clock, Claim, Cluster, ClusterSpec, Direction, Faults};

const ELECTION_DEADLINE: Duration = Duration::from_secs(20);
/// After the group heals, the leader must be healthy and every resource on it within this.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(20);
/// A node that lost its peers may claim until at most this long after the fault (the lease is
/// 805 ms at the defaults; as in `aws_scenarios.rs`).
const LEASE_BOUND: f64 = 1.0;
const MIN_HAND_OFF_INTERVAL: Duration = Duration::from_secs(5);
const LOSS_TABLE: &str = "ha_soak_loss";
/// The soak stops early after this many violations.
const MAX_VIOLATIONS: usize = 5;

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
    fn emulator_faults(&mut self) -> Faults {
        Faults {
            error_rate: [0.0, 0.2, 0.5][self.below(3) as usize],
            throttle_rate: [0.0, 0.2, 0.4][self.below(3) as usize],
            delay_ms: [0, 50, 200][self.below(3) as usize],
        }
    }
}

#[derive(Clone, Debug)]
enum Fault {
    Kill(u64),
    Pause(u64),
    Restart(u64),
    Isolate(u64),
    OneWay(u64, Direction),
    Loss(u64, u32),
    Emulator(Faults),
    Unhealthy(u64),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "SIGKILL",
            Fault::Pause(_) => "SIGSTOP",
            Fault::Restart(_) => "SIGTERM restart",
            Fault::Isolate(_) => "partition",
            Fault::OneWay(_, Direction::Inbound) => "one-way (cannot receive)",
            Fault::OneWay(..) => "one-way (cannot send)",
            Fault::Loss(..) => "packet loss",
            Fault::Emulator(_) => "emulator faults",
            Fault::Unhealthy(_) => "health check fails",
        }
    }

    fn describe(&self) -> String {
        match self {
            Fault::Kill(id) => format!("SIGKILL node {id}, restart at heal"),
            Fault::Pause(id) => format!("SIGSTOP node {id}, SIGCONT at heal"),
            Fault::Restart(id) => format!("SIGTERM + restart node {id}"),
            Fault::Isolate(id) => format!("cut node {id} from its peers (both ways)"),
            Fault::OneWay(id, Direction::Inbound) => {
                format!("node {id} can send to its peers but not receive")
            }
            Fault::OneWay(id, _) => format!("node {id} can receive from its peers but not send"),
            Fault::Loss(id, p) => format!("{p}% loss on node {id}'s peer traffic (numgen)"),
            Fault::Emulator(f) => format!(
                "emulator faults: {:.0}% 503, {:.0}% throttling, {} ms delay",
                f.error_rate * 100.0,
                f.throttle_rate * 100.0,
                f.delay_ms
            ),
            Fault::Unhealthy(id) => format!("node {id}'s service killed: its check fails"),
        }
    }

    /// The node that loses its quorum lease while the fault lasts, if any.
    fn cut_off(&self) -> Option<u64> {
        match self {
            Fault::Pause(id) | Fault::Isolate(id) | Fault::OneWay(id, _) => Some(*id),
            _ => None,
        }
    }
}

struct Window {
    fault: Fault,
    start: f64,
    end: f64,
}

/// A service that is down, and until when.
struct ServiceDown {
    node: u64,
    start: f64,
    until: Instant,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("==> soak FAILED to run: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let mut minutes = 2.0f64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--minutes" => minutes = value()?.parse().context("--minutes")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            other => bail!("unknown argument {other:?} (--minutes N, --seed S)"),
        }
    }
    println!(
        "==> soak: seed {seed}, {minutes} minutes (replay: scripts/soak --minutes {minutes} \
         --seed {seed})"
    );
    let mut rng = Rng(seed);
    let spec = ClusterSpec::three_voters()
        .with_aws()
        .with_reconcile_interval(Duration::from_secs(1))
        .with_min_hand_off_interval(MIN_HAND_OFF_INTERVAL);
    let mut cluster = Cluster::new("soak", spec)?;
    // Declared after the cluster: dropped (the servers killed) before it.
    let mut services = add_web_check(&mut cluster, &WebCheck::fast())?;
    let all = cluster.ids();
    for &id in &all {
        services.start(id)?;
    }
    for &id in &all {
        cluster.start(id)?;
    }
    cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    wait_for_all_health(&mut cluster, &all, true)?;
    let mut leader = cluster.wait_for_healthy_leader_with_resources(&all, CONVERGENCE_BOUND)?;
    let origin = wall_clock();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut violations: Vec<String> = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    let mut leaders_seen: BTreeSet<(u64, u64)> = BTreeSet::from([(leader.id, leader.term)]);
    let mut service_down: Option<ServiceDown> = None;
    let t = |wall: f64| wall - origin;

    while Instant::now() < deadline && violations.len() < MAX_VIOLATIONS {
        // Mostly the leader, sometimes any node.
        let pick = |rng: &mut Rng| {
            if rng.below(10) < 7 {
                leader.id
            } else {
                all[rng.below(all.len() as u64) as usize]
            }
        };
        // The health layer: a service comes back when its time is up; a new one may fail.
        if let Some(down) = service_down.take() {
            if Instant::now() >= down.until {
                services.start(down.node)?;
                let end = wall_clock();
                println!(
                    "[{:7.2} s] heal: node {}'s service started again",
                    t(end),
                    down.node
                );
                windows.push(Window {
                    fault: Fault::Unhealthy(down.node),
                    start: down.start,
                    end,
                });
            } else {
                service_down = Some(down);
            }
        } else if rng.below(4) == 0 {
            let node = pick(&mut rng);
            let lasts = rng.millis(3000, 15000);
            services.stop(node)?;
            let start = wall_clock();
            println!(
                "[{:7.2} s] fault: {} (for {} ms, across what follows)",
                t(start),
                Fault::Unhealthy(node).describe(),
                lasts.as_millis()
            );
            service_down = Some(ServiceDown {
                node,
                start,
                until: Instant::now() + lasts,
            });
        }

        let target = pick(&mut rng);
        let fault = match rng.below(8) {
            0 => Fault::Kill(target),
            1 => Fault::Pause(target),
            2 => Fault::Restart(target),
            3 => Fault::Isolate(target),
            4 => Fault::OneWay(target, Direction::Inbound),
            5 => Fault::OneWay(target, Direction::Outbound),
            6 => Fault::Loss(target, [10, 30, 50][rng.below(3) as usize]),
            _ => Fault::Emulator(rng.emulator_faults()),
        };
        // A quarter of the node and network faults come with emulator faults too.
        let also = match fault {
            Fault::Emulator(_) => None,
            _ if rng.below(4) == 0 => Some(Fault::Emulator(rng.emulator_faults())),
            _ => None,
        };
        let hold = rng.millis(300, 4000);
        let mut faults = vec![fault];
        faults.extend(also);
        let mut starts = Vec::new();
        for fault in &faults {
            let start = wall_clock();
            if let Err(error) = apply(&mut cluster, fault) {
                let line = format!("[{:7.2} s] {}: {error:#}", t(start), fault.describe());
                println!("{line}");
                violations.push(line);
            }
            println!(
                "[{:7.2} s] fault: {} (for {} ms)",
                t(start),
                fault.describe(),
                hold.as_millis()
            );
            starts.push(start);
        }
        thread::sleep(hold);
        for (fault, start) in faults.into_iter().zip(starts) {
            heal(&mut cluster, &fault)?;
            windows.push(Window {
                fault,
                start,
                end: wall_clock(),
            });
        }
        let end = wall_clock();
        // Crashes: every node should run.
        for &id in &all {
            if !cluster.is_running(id)? {
                let line = format!("[{:7.2} s] node {id} exited on its own (crash)", t(end));
                println!("{line}");
                violations.push(line);
                cluster.start(id)?;
            }
        }
        // Convergence after the heal: a healthy leader (one always exists) with every
        // resource on it.
        let healed = Instant::now();
        match cluster.wait_for_healthy_leader_with_resources(&all, CONVERGENCE_BOUND) {
            Ok(now) => {
                leaders_seen.insert((now.id, now.term));
                println!(
                    "[{:7.2} s] healed; leader {now} healthy, every resource on it after {} ms{}",
                    t(end),
                    healed.elapsed().as_millis(),
                    match &service_down {
                        Some(down) => format!(" (node {}'s service still down)", down.node),
                        None => String::new(),
                    }
                );
                leader = now;
            }
            Err(error) => {
                let text = format!("{error:#}");
                let line = format!(
                    "[{:7.2} s] not converged within {} s of the heal: {}",
                    t(end),
                    CONVERGENCE_BOUND.as_secs(),
                    text.lines().next().unwrap_or_default()
                );
                println!("{line}");
                eprintln!("{text}");
                violations.push(line);
                // Any single leader, so that the soak can go on.
                leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
            }
        }
        thread::sleep(rng.millis(200, 1500));
    }
    if let Some(down) = service_down.take() {
        services.start(down.node)?;
        windows.push(Window {
            fault: Fault::Unhealthy(down.node),
            start: down.start,
            end: wall_clock(),
        });
    }

    let world = cluster.aws()?;
    let claims: Vec<(u64, Claim)> = world
        .claims()?
        .into_iter()
        .filter(|c| c.answered >= origin)
        .filter_map(|c| Some((world.claimer(&c)?, c)))
        .collect();
    violations.extend(check_claims(&claims, &windows, &leaders_seen, origin));
    let (moves, leadership_changes) = moves_and_changes(&claims, &leaders_seen);
    let (injected_503, injected_throttle) = world.injected_faults()?;
    let minutes_run = started.elapsed().as_secs_f64() / 60.0;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for window in &windows {
        *kinds.entry(window.fault.kind()).or_default() += 1;
    }
    let kinds = kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "\n==> soak totals: seed {seed}, {minutes_run:.1} minutes, {} faults injected ({kinds}), \
         {} claims (the proxy injected {injected_503} 503s and {injected_throttle} throttles \
         over all requests), leadership changes {leadership_changes}, Elastic IP moves {moves}, \
         violations {}",
        windows.len(),
        claims.len(),
        violations.len()
    );
    if violations.is_empty() {
        drop(services);
        cluster.finish()?;
        return Ok(true);
    }
    for v in &violations {
        println!("==> VIOLATION (seed {seed}): {v}");
    }
    println!(
        "==> replay: scripts/soak --minutes {minutes} --seed {seed}; files kept in {}",
        cluster.dir().display()
    );
    Ok(false)
}

/// The checks over the claim log: no two nodes with claims in flight at once; no claim from a
/// node after its lease could have ended; leader-parameter terms never go back; the Elastic IP
/// moves no more often than leadership changes.
fn check_claims(
    claims: &[(u64, Claim)],
    windows: &[Window],
    leaders_seen: &BTreeSet<(u64, u64)>,
    origin: f64,
) -> Vec<String> {
    let t = |wall: f64| wall - origin;
    let mut violations = Vec::new();
    for (i, (a, ca)) in claims.iter().enumerate() {
        for (b, cb) in &claims[i + 1..] {
            if a != b && cb.arrived < ca.answered && ca.arrived < cb.answered {
                violations.push(format!(
                    "nodes {a} and {b} had claims in flight at once: {} {:.3}..{:.3} s and {} \
                     {:.3}..{:.3} s",
                    ca.action,
                    t(ca.arrived),
                    t(ca.answered),
                    cb.action,
                    t(cb.arrived),
                    t(cb.answered)
                ));
            }
        }
    }
    for window in windows {
        if let Some(node) = window.fault.cut_off() {
            for (n, c) in claims {
                if *n == node && c.arrived > window.start + LEASE_BOUND && c.arrived < window.end {
                    violations.push(format!(
                        "node {node} claimed ({}) at {:.3} s, more than {LEASE_BOUND} s after \
                         fault \"{}\" at {:.3} s and before its heal at {:.3} s",
                        c.action,
                        t(c.arrived),
                        window.fault.describe(),
                        t(window.start),
                        t(window.end)
                    ));
                }
            }
        }
    }
    // The leader parameter's writes name the writer's term: in the order they arrived, terms
    // never go back (a deposed leader that wrote after its successor would show here, also
    // after a SIGCONT, which the windows above do not cover).
    let mut highest: Option<(u64, u64, f64)> = None;
    for (node, claim) in claims {
        if claim.action != "PutParameter" || claim.injected.is_some() {
            continue;
        }
        let Some(term) = parameter_term(claim) else {
            continue;
        };
        if let Some((high, by, at)) = highest {
            if term < high {
                violations.push(format!(
                    "node {node} wrote the leader parameter for term {term} at {:.3} s, after \
                     node {by} wrote it for term {high} at {:.3} s",
                    t(claim.arrived),
                    t(at)
                ));
                continue;
            }
        }
        if highest.is_none_or(|(high, _, _)| term > high) {
            highest = Some((term, *node, claim.arrived));
        }
    }
    let (moves, leadership_changes) = moves_and_changes(claims, leaders_seen);
    if moves > leadership_changes {
        violations.push(format!(
            "the Elastic IP moved {moves} times but leadership changed only \
             {leadership_changes} times"
        ));
    }
    violations
}

/// Moves of the Elastic IP (a successful AssociateAddress by another node than the last one)
/// and leadership changes (distinct terms named in the leader parameter's claims or seen as a
/// leader's term, minus one).
fn moves_and_changes(
    claims: &[(u64, Claim)],
    leaders_seen: &BTreeSet<(u64, u64)>,
) -> (usize, usize) {
    let mut moves = 0;
    let mut last: Option<u64> = None;
    for (node, claim) in claims {
        if claim.action == "AssociateAddress" && claim.status == 200 && claim.injected.is_none() {
            if last.is_some_and(|l| l != *node) {
                moves += 1;
            }
            last = Some(*node);
        }
    }
    let mut terms: BTreeSet<u64> = leaders_seen.iter().map(|(_, term)| *term).collect();
    for (_, claim) in claims {
        if claim.action == "PutParameter" {
            if let Some(term) = parameter_term(claim) {
                terms.insert(term);
            }
        }
    }
    (moves, terms.len().saturating_sub(1))
}

/// The term named in a PutParameter claim's leader document.
fn parameter_term(claim: &Claim) -> Option<u64> {
    claim
        .target
        .value
        .as_deref()
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .and_then(|v| v["term"].as_u64())
}

fn apply(cluster: &mut Cluster, fault: &Fault) -> Result<()> {
    match fault {
        Fault::Kill(id) => cluster.kill(*id),
        Fault::Pause(id) => cluster.pause(*id),
        Fault::Restart(id) => {
            let exit = cluster.terminate(*id, Duration::from_secs(10))?;
            cluster.start(*id)?;
            if !exit.status.success() {
                bail!(
                    "node {id} exited with {} after SIGTERM (a crash)",
                    exit.status
                );
            }
            Ok(())
        }
        Fault::Isolate(id) => cluster.isolate(*id),
        Fault::OneWay(id, direction) => {
            let others = cluster.others(*id);
            cluster.cut(*id, *direction, &others)
        }
        Fault::Loss(id, percent) => {
            let peers = cluster
                .others(*id)
                .iter()
                .map(|&p| cluster.network().address(p).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let script = format!(
                "add table inet {LOSS_TABLE}\n\
                 add chain inet {LOSS_TABLE} input {{ type filter hook input priority 0 ; policy accept ; }}\n\
                 add chain inet {LOSS_TABLE} output {{ type filter hook output priority 0 ; policy accept ; }}\n\
                 add rule inet {LOSS_TABLE} input ip saddr {{ {peers} }} numgen random mod 100 < {percent} drop\n\
                 add rule inet {LOSS_TABLE} output ip daddr {{ {peers} }} numgen random mod 100 < {percent} drop\n"
            );
            nft(cluster, *id, &script)
        }
        Fault::Emulator(faults) => cluster.aws()?.set_faults(*faults),
        Fault::Unhealthy(_) => bail!("the health layer stops services itself"),
    }
}

fn heal(cluster: &mut Cluster, fault: &Fault) -> Result<()> {
    match fault {
        Fault::Kill(id) => cluster.start(*id),
        Fault::Pause(id) => cluster.resume(*id),
        Fault::Restart(_) => Ok(()),
        Fault::Isolate(id) | Fault::OneWay(id, _) => cluster.heal(*id),
        Fault::Loss(id, _) => nft(
            cluster,
            *id,
            &format!("add table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n"),
        ),
        Fault::Emulator(_) => cluster.aws()?.set_faults(Faults::default()),
        Fault::Unhealthy(_) => bail!("the health layer starts services itself"),
    }
}

fn nft(cluster: &Cluster, id: u64, script: &str) -> Result<()> {
    use std::io::Write;
    let mut command = cluster.network().command_in(id, "nft");
    command
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped());
    let mut child = command.spawn().context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft in node {id} failed ({status}) on:\n{script}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_agent_e2e::aws::ClaimTarget;

    fn claim(action: &str, arrived: f64, answered: f64, value: Option<&str>) -> Claim {
        Claim {
            service: "ec2".into(),
            action: action.into(),
            target: ClaimTarget {
                value: value.map(str::to_string),
                ..ClaimTarget::default()
            },
            client: String::new(),
            arrived,
            answered,
            status: 200,
            injected: None,
        }
    }

    #[test]
    fn overlapping_claims_of_two_nodes_are_a_violation() {
        let claims = vec![
            (1, claim("AssociateAddress", 10.0, 10.5, None)),
            (2, claim("AssociateAddress", 10.4, 10.6, None)),
        ];
        let seen = BTreeSet::from([(1, 2), (2, 3)]);
        let found = check_claims(&claims, &[], &seen, 0.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("in flight at once"), "{found:?}");
        let apart = vec![
            (1, claim("AssociateAddress", 10.0, 10.5, None)),
            (2, claim("AssociateAddress", 10.6, 10.7, None)),
        ];
        assert!(check_claims(&apart, &[], &seen, 0.0).is_empty());
    }

    #[test]
    fn a_claim_after_the_lease_of_a_cut_off_node_is_a_violation() {
        let windows = [Window {
            fault: Fault::Isolate(1),
            start: 100.0,
            end: 105.0,
        }];
        let seen = BTreeSet::from([(1, 2)]);
        let late = vec![(1, claim("AssociateAddress", 101.5, 101.6, None))];
        assert_eq!(check_claims(&late, &windows, &seen, 0.0).len(), 1);
        let early = vec![(1, claim("AssociateAddress", 100.5, 100.6, None))];
        assert!(check_claims(&early, &windows, &seen, 0.0).is_empty());
        // A service failure takes no lease away.
        let unhealthy = [Window {
            fault: Fault::Unhealthy(1),
            start: 100.0,
            end: 105.0,
        }];
        assert!(check_claims(&late, &unhealthy, &seen, 0.0).is_empty());
    }

    #[test]
    fn a_leader_parameter_write_for_an_older_term_is_a_violation() {
        let seen = BTreeSet::from([(1, 3), (2, 4)]);
        let backwards = vec![
            (2, claim("PutParameter", 1.0, 1.1, Some(r#"{"term":4}"#))),
            (1, claim("PutParameter", 2.0, 2.1, Some(r#"{"term":3}"#))),
        ];
        let found = check_claims(&backwards, &[], &seen, 0.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("for term 3"), "{found:?}");
        let forwards = vec![
            (1, claim("PutParameter", 1.0, 1.1, Some(r#"{"term":3}"#))),
            (1, claim("PutParameter", 1.5, 1.6, Some(r#"{"term":3}"#))),
            (2, claim("PutParameter", 2.0, 2.1, Some(r#"{"term":4}"#))),
        ];
        assert!(check_claims(&forwards, &[], &seen, 0.0).is_empty());
    }

    #[test]
    fn more_moves_than_leadership_changes_is_a_violation() {
        let claims = vec![
            (1, claim("AssociateAddress", 1.0, 1.1, None)),
            (2, claim("AssociateAddress", 2.0, 2.1, None)),
            (1, claim("AssociateAddress", 3.0, 3.1, None)),
        ];
        let one_change = BTreeSet::from([(1, 2), (2, 3)]);
        let found = check_claims(&claims, &[], &one_change, 0.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("moved 2 times"), "{found:?}");
        let mut with_parameter = claims.clone();
        with_parameter.push((1, claim("PutParameter", 3.2, 3.3, Some(r#"{"term":4}"#))));
        assert!(check_claims(&with_parameter, &[], &one_change, 0.0).is_empty());
    }
}
