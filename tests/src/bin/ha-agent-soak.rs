//! The fault soak (a command; CI runs a short one): three real `ha-agent run` processes in
//! network namespaces against the AWS emulator behind the fault proxy, and a seeded random
//! schedule of faults, one at a time: SIGKILL + restart, SIGSTOP + SIGCONT, SIGTERM restart,
//! symmetric and one-way partitions (nftables DROP), probabilistic packet loss (nftables
//! `numgen random` rules), and emulator errors, throttling and delay through the fault proxy.
//!
//! After every fault and heal it checks, from outside the agents:
//! - within a bound after the heal, the nodes agree on one leader and every resource points at
//!   it (the emulator's API);
//! - no agent exited on its own (a crash; systemd would restart it).
//!
//! And over the fault proxy's claim log:
//!
//! - at no instant do two nodes have claims in flight (arrival..answer overlaps);
//! - no claim from a node cut off from its peers (any direction) or paused arrives after the
//!   fault + 1 s (its quorum lease, 805 ms at the defaults, has ended) and before the heal;
//! - the Elastic IP moves (successful AssociateAddress by a different node than the last) no
//!   more often than leadership changes (distinct terms in the leader parameter's claims).
//!
//! Usage: ha-agent-soak [--minutes N (2)] [--seed S (time)] ; prints the seed, the timeline,
//! totals and every violation with the seed to replay. Exit 1 on any violation.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ha_agent_e2e::{wall_clock, Claim, Cluster, ClusterSpec, Direction, Faults};

const ELECTION_DEADLINE: Duration = Duration::from_secs(20);
/// After the group heals, every resource must point at the leader within this.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(20);
/// A node that lost its peers may claim until at most this long after the fault (the lease is
/// 805 ms at the defaults; as in `aws_scenarios.rs`).
const LEASE_BOUND: f64 = 1.0;
const LOSS_TABLE: &str = "ha_soak_loss";

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
}

impl Fault {
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
    println!("==> soak: seed {seed}, {minutes} minutes (replay: scripts/soak --minutes {minutes} --seed {seed})");
    let mut rng = Rng(seed);
    let spec = ClusterSpec::three_voters()
        .with_aws()
        .with_reconcile_interval(Duration::from_secs(1));
    let mut cluster = Cluster::new("soak", spec)?;
    let all = cluster.ids();
    for &id in &all {
        cluster.start(id)?;
    }
    let leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    cluster.wait_for_resources_on(leader.id, Some(leader.term), CONVERGENCE_BOUND)?;
    let origin = wall_clock();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut violations: Vec<String> = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    let mut leader = leader;
    let mut leaders_seen: BTreeSet<(u64, u64)> = BTreeSet::from([(leader.id, leader.term)]);
    let t = |wall: f64| wall - origin;

    while Instant::now() < deadline && violations.len() < 5 {
        // Mostly the leader, sometimes a follower.
        let target = if rng.below(10) < 7 {
            leader.id
        } else {
            all[rng.below(all.len() as u64) as usize]
        };
        let fault = match rng.below(8) {
            0 => Fault::Kill(target),
            1 => Fault::Pause(target),
            2 => Fault::Restart(target),
            3 => Fault::Isolate(target),
            4 => Fault::OneWay(target, Direction::Inbound),
            5 => Fault::OneWay(target, Direction::Outbound),
            6 => Fault::Loss(target, [10, 30, 50][rng.below(3) as usize]),
            _ => Fault::Emulator(Faults {
                error_rate: [0.0, 0.2, 0.5][rng.below(3) as usize],
                throttle_rate: [0.0, 0.2, 0.4][rng.below(3) as usize],
                delay_ms: [0, 50, 200][rng.below(3) as usize],
            }),
        };
        let hold = rng.millis(300, 4000);
        let start = wall_clock();
        if let Err(error) = apply(&mut cluster, &fault) {
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
        thread::sleep(hold);
        heal(&mut cluster, &fault)?;
        let end = wall_clock();
        windows.push(Window { fault, start, end });
        // Crashes: every node should run.
        for &id in &all {
            if !cluster.is_running(id)? {
                let line = format!("[{:7.2} s] node {id} exited on its own (crash)", t(end));
                println!("{line}");
                violations.push(line);
                cluster.start(id)?;
            }
        }
        // Convergence after the heal.
        let healed = Instant::now();
        match cluster
            .wait_for_single_leader(&all, CONVERGENCE_BOUND)
            .and_then(|l| {
                let left = CONVERGENCE_BOUND.saturating_sub(healed.elapsed());
                cluster.wait_for_resources_on(l.id, Some(l.term), left)?;
                Ok(l)
            }) {
            Ok(now) => {
                if now != leader {
                    leaders_seen.insert((now.id, now.term));
                }
                println!(
                    "[{:7.2} s] healed; leader {now}, every resource on it after {} ms",
                    t(end),
                    healed.elapsed().as_millis()
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
                leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
            }
        }
        thread::sleep(rng.millis(200, 1500));
    }

    // The claim log, checked as a whole.
    let world = cluster.aws()?;
    let claims: Vec<(u64, Claim)> = world
        .claims()?
        .into_iter()
        .filter(|c| c.answered >= origin)
        .filter_map(|c| Some((world.claimer(&c)?, c)))
        .collect();
    // 1. No two nodes with claims in flight at once.
    for (i, (a, ca)) in claims.iter().enumerate() {
        for (b, cb) in &claims[i + 1..] {
            if a != b && cb.arrived < ca.answered && ca.arrived < cb.answered {
                violations.push(format!(
                    "nodes {a} and {b} had claims in flight at once: {} {:.3}..{:.3} s and {} {:.3}..{:.3} s",
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
    // 2. No claim from a node after its lease could have ended.
    for window in &windows {
        if let Some(node) = window.fault.cut_off() {
            for (n, c) in &claims {
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
    // 3. Moves of the Elastic IP vs leadership changes.
    let mut moves = 0;
    let mut last: Option<u64> = None;
    for (node, claim) in &claims {
        if claim.action == "AssociateAddress" && claim.status == 200 && claim.injected.is_none() {
            if last.is_some_and(|l| l != *node) {
                moves += 1;
            }
            last = Some(*node);
        }
    }
    let mut terms: BTreeSet<u64> = BTreeSet::new();
    for (_, claim) in &claims {
        if claim.action == "PutParameter" {
            if let Some(term) = claim
                .target
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
                .and_then(|v| v["term"].as_u64())
            {
                terms.insert(term);
            }
        }
    }
    for (_, term) in &leaders_seen {
        terms.insert(*term);
    }
    let leadership_changes = terms.len().saturating_sub(1);
    if moves > leadership_changes {
        violations.push(format!(
            "the Elastic IP moved {moves} times but leadership changed only {leadership_changes} times"
        ));
    }
    let (injected_503, injected_throttle) = world.injected_faults()?;
    let minutes_run = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "\n==> soak totals: seed {seed}, {minutes_run:.1} minutes, {} faults injected, {} claims \
         (the proxy injected {} 503s and {} throttles over all requests), leadership changes {leadership_changes}, \
         Elastic IP moves {moves}, violations {}",
        windows.len(),
        claims.len(),
        injected_503,
        injected_throttle,
        violations.len()
    );
    if violations.is_empty() {
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
