//! The failover benchmark (a command, not a test; see docs/benchmarks.md): three nodes in
//! network namespaces, one AWS emulator (moto) behind the fault proxy, one Elastic IP. For
//! ha-agent (default settings) and for keepalived (unicast VRRP, priorities 150/100/50, a
//! `notify_master` that runs `aws ec2 associate-address --allow-reassociation`) at two
//! `advert_int` settings, each scenario runs `--trials` times: the current holder is SIGKILLed,
//! SIGSTOPped, or cut off from its peers by nftables DROP rules (not from the emulator), or (for
//! ha-agent only, as the issue asks) its service is killed so that its http check fails, and the
//! time from the fault until DescribeAddresses (polled every 10 ms) shows the Elastic IP on
//! another node is recorded. Split-brain seconds come from the fault proxy's claim log (and,
//! for keepalived, its VRRP state transitions). Idle cost: RSS, CPU and peer-link bytes.
//!
//! Usage: ha-agent-bench [--trials N] [--idle-seconds S] [--out-dir DIR]
//!                       [--scenarios kill,stop,partition,health] [--systems ha-agent,keepalived]
//!                       [--advert-ints 1,0.28]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ha_agent_e2e::health_scenarios::{add_web_check, wait_for_all_health, Services, WebCheck};
use ha_agent_e2e::keepalived::{Keepalived, VrrpSettings};
use ha_agent_e2e::measure::{
    belief_split_brain, claim_window_split_brain, idle_cost, summarize, ClaimSpan, IdleCost,
    Summary,
};
use ha_agent_e2e::{wall_clock, Cluster, ClusterSpec, Holder};
use serde::Serialize;

const EIP_POLL: Duration = Duration::from_millis(10);
const ELECTION_DEADLINE: Duration = Duration::from_secs(15);
const RESOURCE_DEADLINE: Duration = Duration::from_secs(30);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
/// Quiet time before each fault and after each recovery, so that claims of one trial do not
/// run into the next.
const SETTLE: Duration = Duration::from_millis(1500);
/// The agent's default `cluster.min-hand-off-interval`, and a margin.
const MIN_HAND_OFF_INTERVAL: Duration = Duration::from_secs(31);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Kill,
    Stop,
    Partition,
    Health,
}

impl Scenario {
    fn parse(text: &str) -> Result<Scenario> {
        Ok(match text {
            "kill" => Scenario::Kill,
            "stop" => Scenario::Stop,
            "partition" => Scenario::Partition,
            "health" => Scenario::Health,
            other => bail!("unknown scenario {other:?} (kill, stop, partition, health)"),
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Kill => "SIGKILL of the holder",
            Scenario::Stop => "SIGSTOP of the holder",
            Scenario::Partition => "holder cut from its peers (nft DROP), not from the emulator",
            Scenario::Health => {
                "the holder's service is killed, so its http check fails (ha-agent only; the \
                 check at the agent's defaults: every 1 s, timeout 500 ms, fall 3)"
            }
        }
    }
}

struct Options {
    trials: usize,
    idle: Duration,
    out_dir: PathBuf,
    scenarios: Vec<Scenario>,
    ha_agent: bool,
    keepalived: bool,
    advert_ints: Vec<f64>,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        trials: 20,
        idle: Duration::from_secs(60),
        out_dir: PathBuf::from("/tmp/ha-agent-bench"),
        scenarios: vec![
            Scenario::Kill,
            Scenario::Stop,
            Scenario::Partition,
            Scenario::Health,
        ],
        ha_agent: true,
        keepalived: true,
        advert_ints: vec![1.0, 0.28],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--trials" => options.trials = value()?.parse().context("--trials")?,
            "--idle-seconds" => {
                options.idle = Duration::from_secs_f64(value()?.parse().context("--idle-seconds")?)
            }
            "--out-dir" => options.out_dir = PathBuf::from(value()?),
            "--scenarios" => {
                options.scenarios = value()?
                    .split(',')
                    .map(Scenario::parse)
                    .collect::<Result<_>>()?
            }
            "--systems" => {
                let systems = value()?;
                options.ha_agent = systems.split(',').any(|s| s == "ha-agent");
                options.keepalived = systems.split(',').any(|s| s == "keepalived");
            }
            "--advert-ints" => {
                options.advert_ints = value()?
                    .split(',')
                    .map(|v| v.parse::<f64>().context("--advert-ints"))
                    .collect::<Result<_>>()?
            }
            "-h" | "--help" => {
                println!(
                    "ha-agent-bench [--trials N (20)] [--idle-seconds S (60)] [--out-dir DIR] \
                     [--scenarios kill,stop,partition,health] [--systems ha-agent,keepalived] \
                     [--advert-ints 1,0.28]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

#[derive(Clone, Debug, Serialize)]
struct Trial {
    system: String,
    scenario: Scenario,
    trial: usize,
    from_node: u64,
    to_node: u64,
    /// Fault → DescribeAddresses shows the Elastic IP on another node.
    failover_s: f64,
    /// Fault → the first successful AssociateAddress by another node was answered (claim log).
    claim_answered_s: Option<f64>,
    split_brain_claims_s: f64,
    split_brain_state_s: Option<f64>,
    /// keepalived only: after the heal the Elastic IP was not back on the master, and the
    /// harness had to put it there (by running the master's notify_master script itself).
    restored_by_harness: bool,
}

#[derive(Clone, Debug, Serialize)]
struct Row {
    system: String,
    scenario: Scenario,
    #[serde(flatten)]
    summary: Summary,
    claim_answered: Summary,
    split_brain_claims_s: f64,
    split_brain_state_s: Option<f64>,
    restored_by_harness: usize,
}

#[derive(Clone, Debug, Serialize)]
struct Idle {
    system: String,
    nodes: Vec<IdleCost>,
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: BTreeMap<String, String>,
    started_unix: f64,
    trials_per_scenario: usize,
    rows: Vec<Row>,
    idle: Vec<Idle>,
    trials: Vec<Trial>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("==> bench FAILED: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    println!("==> {line}");
}

fn run() -> Result<()> {
    let options = parse_options()?;
    std::fs::create_dir_all(&options.out_dir)?;
    let started_unix = wall_clock();
    let spec = ClusterSpec::three_voters().with_aws();
    let mut cluster = Cluster::new("bench", spec)?;
    // Every node's service and, in ha-agent's configs, an http check on it at the defaults.
    // Declared after the cluster: dropped (the servers killed) before it.
    let mut services = add_web_check(&mut cluster, &WebCheck::default())?;
    let mut trials = Vec::new();
    let mut idle = Vec::new();

    if options.ha_agent {
        run_ha_agent(
            &mut cluster,
            &mut services,
            &options,
            &mut trials,
            &mut idle,
        )?;
    }
    for id in cluster.ids() {
        if cluster.is_running(id)? {
            cluster.kill(id)?;
        }
    }
    if options.keepalived {
        for &advert in &options.advert_ints {
            run_keepalived(
                &mut cluster,
                &options,
                VrrpSettings { advert_int: advert },
                &mut trials,
                &mut idle,
            )?;
        }
    }

    let mut rows = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    for trial in &trials {
        if !systems.contains(&trial.system) {
            systems.push(trial.system.clone());
        }
    }
    for scenario in &options.scenarios {
        for system in &systems {
            let of: Vec<&Trial> = trials
                .iter()
                .filter(|t| &t.system == system && t.scenario == *scenario)
                .collect();
            if of.is_empty() {
                continue;
            }
            let failover: Vec<f64> = of.iter().map(|t| t.failover_s).collect();
            let claims: Vec<f64> = of.iter().filter_map(|t| t.claim_answered_s).collect();
            rows.push(Row {
                system: system.clone(),
                scenario: *scenario,
                summary: summarize(&failover),
                claim_answered: summarize(&claims),
                split_brain_claims_s: of.iter().map(|t| t.split_brain_claims_s).sum(),
                split_brain_state_s: of
                    .iter()
                    .map(|t| t.split_brain_state_s)
                    .sum::<Option<f64>>(),
                restored_by_harness: of.iter().filter(|t| t.restored_by_harness).count(),
            });
        }
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        started_unix,
        trials_per_scenario: options.trials,
        rows,
        idle,
        trials,
    };
    let markdown = markdown(&report);
    let json_path = options.out_dir.join("results.json");
    let md_path = options.out_dir.join("results.md");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    std::fs::write(&md_path, &markdown)?;
    println!("\n{markdown}");
    say(&format!(
        "results: {} and {}",
        json_path.display(),
        md_path.display()
    ));
    cluster.finish()
}

// ---- ha-agent -----------------------------------------------------------------------------------

fn run_ha_agent(
    cluster: &mut Cluster,
    services: &mut Services,
    options: &Options,
    trials: &mut Vec<Trial>,
    idle: &mut Vec<Idle>,
) -> Result<()> {
    let all = cluster.ids();
    say(
        "ha-agent: starting every node's service and three agents at their default settings \
         (one http check on the service, at the check defaults)",
    );
    for &id in &all {
        services.start(id)?;
    }
    for &id in &all {
        cluster.start(id)?;
    }
    cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    // Checks start down: the first leader may hand off once a peer turns healthy first.
    wait_for_all_health(cluster, &all, true)?;
    cluster.wait_for_healthy_leader_with_resources(&all, RESOURCE_DEADLINE)?;
    thread::sleep(SETTLE);
    say(&format!(
        "ha-agent: idle cost over {} s",
        options.idle.as_secs_f64()
    ));
    let mut pids = BTreeMap::new();
    for &id in &all {
        let pid = cluster.pid(id)?.context("agent not running")? as i32;
        pids.insert(id, vec![pid]);
    }
    let nodes = idle_cost(cluster.network(), &pids, options.idle)?;
    print_idle("ha-agent", &nodes);
    idle.push(Idle {
        system: "ha-agent".into(),
        nodes,
    });

    // When each node last handed off for health: a leader hands off for health at most once
    // per `cluster.min-hand-off-interval` (30 s by default), a rate limit rather than a
    // detection time, so a health trial waits until its holder is past it.
    let mut health_hand_offs: BTreeMap<u64, Instant> = BTreeMap::new();
    for &scenario in &options.scenarios {
        for trial in 0..options.trials {
            let leader = cluster.wait_for_healthy_leader_with_resources(&all, RESOURCE_DEADLINE)?;
            thread::sleep(SETTLE);
            let from = leader.id;
            if scenario == Scenario::Health {
                if let Some(at) = health_hand_offs.get(&from) {
                    let wait = MIN_HAND_OFF_INTERVAL.saturating_sub(at.elapsed());
                    if !wait.is_zero() {
                        say(&format!(
                            "ha-agent: node {from} handed off for health {} ms ago; waiting {} ms \
                             (min-hand-off-interval)",
                            at.elapsed().as_millis(),
                            wait.as_millis()
                        ));
                        thread::sleep(wait);
                    }
                }
            }
            let fault_wall = wall_clock();
            let fault = Instant::now();
            match scenario {
                Scenario::Kill => cluster.kill(from)?,
                Scenario::Stop => cluster.pause(from)?,
                Scenario::Partition => cluster.isolate(from)?,
                Scenario::Health => services.stop(from)?,
            }
            let to = cluster.wait_for_elastic_ip_to_leave(from, FAILOVER_DEADLINE, EIP_POLL)?;
            let failover = fault.elapsed().as_secs_f64();
            match scenario {
                Scenario::Kill => cluster.start(from)?,
                Scenario::Stop => cluster.resume(from)?,
                Scenario::Partition => cluster.heal(from)?,
                Scenario::Health => {
                    health_hand_offs.insert(from, Instant::now());
                    services.start(from)?;
                }
            }
            // Every check up again (a restarted agent's start down), so that the next trial
            // has a healthy node to move to.
            wait_for_all_health(cluster, &all, true)?;
            cluster.wait_for_healthy_leader_with_resources(&all, RESOURCE_DEADLINE)?;
            thread::sleep(SETTLE);
            let spans = claim_spans(cluster, fault_wall, wall_clock())?;
            let claim_answered = first_claim_by_other(cluster, fault_wall, from)?;
            let record = Trial {
                system: "ha-agent".into(),
                scenario,
                trial,
                from_node: from,
                to_node: to,
                failover_s: failover,
                claim_answered_s: claim_answered,
                split_brain_claims_s: claim_window_split_brain(&spans),
                split_brain_state_s: None,
                restored_by_harness: false,
            };
            print_trial(&record);
            trials.push(record);
        }
    }
    Ok(())
}

// ---- keepalived ---------------------------------------------------------------------------------

fn run_keepalived(
    cluster: &mut Cluster,
    options: &Options,
    settings: VrrpSettings,
    trials: &mut Vec<Trial>,
    idle: &mut Vec<Idle>,
) -> Result<()> {
    let label = settings.label();
    let mut keepalived = Keepalived::prepare(cluster, settings)?;
    let all = cluster.ids();
    let master = keepalived.preferred();
    let backup = all
        .iter()
        .copied()
        .filter(|&id| id != master)
        .max_by_key(|&id| keepalived.priority(id))
        .unwrap_or(master);
    say(&format!(
        "{label}: VRRPv{}, Master_Down_Interval of the priority-{} backup {:.3} s; starting \
         keepalived in the three namespaces (configs in {})",
        settings.version(),
        keepalived.priority(backup),
        settings.master_down_interval(keepalived.priority(backup)),
        keepalived.dir().display()
    ));
    keepalived.start_all(cluster)?;
    for &id in &all {
        keepalived.wait_for_child(id, Duration::from_secs(10))?;
    }
    let settle_deadline = Duration::from_secs_f64(3.0 * settings.master_down_interval(50) + 20.0);
    wait_for_master_with_eip(cluster, &keepalived, master, settle_deadline)?;
    thread::sleep(SETTLE);
    say(&format!(
        "{label}: idle cost over {} s",
        options.idle.as_secs_f64()
    ));
    let mut pids = BTreeMap::new();
    for &id in &all {
        pids.insert(id, keepalived.pids(id)?);
    }
    let nodes = idle_cost(cluster.network(), &pids, options.idle)?;
    print_idle(&label, &nodes);
    idle.push(Idle {
        system: label.clone(),
        nodes,
    });

    for &scenario in &options.scenarios {
        if scenario == Scenario::Health {
            say(&format!(
                "{label}: no health scenario (the issue compares keepalived on the first three)"
            ));
            continue;
        }
        for trial in 0..options.trials {
            let restored =
                !wait_for_master_with_eip(cluster, &keepalived, master, settle_deadline)?;
            if restored {
                restore_eip(&keepalived, master)?;
                wait_for_eip(cluster, master, RESOURCE_DEADLINE)?;
            }
            thread::sleep(SETTLE);
            let fault_wall = wall_clock();
            let fault = Instant::now();
            match scenario {
                Scenario::Kill => keepalived.crash(master)?,
                Scenario::Stop => keepalived.pause(master)?,
                Scenario::Partition => cluster.isolate(master)?,
                Scenario::Health => bail!("keepalived has no health scenario"),
            }
            let to = cluster.wait_for_elastic_ip_to_leave(master, FAILOVER_DEADLINE, EIP_POLL)?;
            let failover = fault.elapsed().as_secs_f64();
            let healed_wall = wall_clock();
            match scenario {
                Scenario::Kill => {
                    keepalived.start(cluster, master)?;
                    keepalived.wait_for_child(master, Duration::from_secs(10))?;
                }
                Scenario::Stop => keepalived.resume(master)?,
                Scenario::Partition => cluster.heal(master)?,
                Scenario::Health => bail!("keepalived has no health scenario"),
            }
            let back = wait_for_master_with_eip(cluster, &keepalived, master, settle_deadline)?;
            thread::sleep(SETTLE);
            let end_wall = wall_clock();
            let spans = claim_spans(cluster, fault_wall, end_wall)?;
            let claim_answered = first_claim_by_other(cluster, fault_wall, master)?;
            let beliefs = vrrp_beliefs(
                &keepalived,
                &all,
                master,
                scenario,
                (fault_wall, healed_wall),
                (fault_wall, end_wall),
            );
            let record = Trial {
                system: label.clone(),
                scenario,
                trial,
                from_node: master,
                to_node: to,
                failover_s: failover,
                claim_answered_s: claim_answered,
                split_brain_claims_s: claim_window_split_brain(&spans),
                split_brain_state_s: Some(belief_split_brain(&beliefs, &spans)),
                restored_by_harness: !back,
            };
            print_trial(&record);
            if !back {
                restore_eip(&keepalived, master)?;
                wait_for_eip(cluster, master, RESOURCE_DEADLINE)?;
            }
            trials.push(record);
        }
    }
    keepalived.stop_all();
    Ok(())
}

/// Waits until `master` announced MASTER last and the Elastic IP is on it; `false` if that
/// does not happen within `timeout` while `master` is MASTER (keepalived does not re-run
/// notify_master for a node that never left MASTER).
fn wait_for_master_with_eip(
    cluster: &Cluster,
    keepalived: &Keepalived,
    master: u64,
    timeout: Duration,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut master_since: Option<Instant> = None;
    loop {
        let is_master = keepalived.state(master).as_deref() == Some("MASTER");
        let others_backup = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != master)
            .all(|id| keepalived.state(id).as_deref() != Some("MASTER"));
        let holder = cluster.aws()?.elastic_ip_holder()?;
        if is_master && others_backup && holder == Holder::Node(master) {
            return Ok(true);
        }
        if is_master && others_backup {
            let since = *master_since.get_or_insert_with(Instant::now);
            // notify_master ran (or will not run again): give the CLI call time to land.
            if since.elapsed() > Duration::from_secs(4) {
                return Ok(false);
            }
        } else {
            master_since = None;
        }
        if Instant::now() >= deadline {
            bail!(
                "keepalived did not settle within {} ms: states {:?}, Elastic IP on {holder}",
                timeout.as_millis(),
                cluster
                    .ids()
                    .into_iter()
                    .map(|id| (id, keepalived.state(id)))
                    .collect::<Vec<_>>()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_eip(cluster: &Cluster, node: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cluster.aws()?.elastic_ip_holder()? == Holder::Node(node) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("the Elastic IP did not come to node {node}")
}

/// Runs `master`'s notify_master script from the host namespace (its claim comes from the
/// bridge address, which the measures ignore).
fn restore_eip(keepalived: &Keepalived, master: u64) -> Result<()> {
    let script = keepalived.dir().join(format!("notify-master-{master}.sh"));
    let status = Command::new(&script)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", script.display());
    }
    Ok(())
}

/// Each node's VRRP MASTER intervals within `window`, while its process ran: the master's
/// belief is cut out during `down` for a crash or a pause (a dead or frozen process believes
/// nothing it can act on).
fn vrrp_beliefs(
    keepalived: &Keepalived,
    ids: &[u64],
    master: u64,
    scenario: Scenario,
    down: (f64, f64),
    window: (f64, f64),
) -> BTreeMap<u64, Vec<(f64, f64)>> {
    let mut beliefs = BTreeMap::new();
    for &id in ids {
        let mut spans = Vec::new();
        let mut since: Option<f64> = None;
        for (time, state) in keepalived.events(id) {
            match (state == "MASTER", since) {
                (true, None) => since = Some(time),
                (false, Some(start)) => {
                    spans.push((start, time));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(start) = since {
            spans.push((start, window.1));
        }
        let mut clipped = Vec::new();
        for (a, b) in spans {
            let (a, b) = (a.max(window.0), b.min(window.1));
            if b <= a {
                continue;
            }
            if id == master && scenario != Scenario::Partition {
                if a < down.0 {
                    clipped.push((a, b.min(down.0)));
                }
                if b > down.1 {
                    clipped.push((a.max(down.1), b));
                }
            } else {
                clipped.push((a, b));
            }
        }
        beliefs.insert(id, clipped);
    }
    beliefs
}

// ---- the claim log ------------------------------------------------------------------------------

/// The nodes' claims (any action; not the harness's own) that arrived in [from, to] or were in
/// flight at `from`.
fn claim_spans(cluster: &Cluster, from: f64, to: f64) -> Result<Vec<ClaimSpan>> {
    let world = cluster.aws()?;
    Ok(world
        .claims()?
        .into_iter()
        .filter(|c| c.answered >= from && c.arrived <= to)
        .filter_map(|c| {
            Some(ClaimSpan {
                node: world.claimer(&c)?,
                arrived: c.arrived,
                answered: c.answered,
            })
        })
        .collect())
}

/// Seconds from `fault` until the first successful AssociateAddress by a node other than
/// `from` was answered.
fn first_claim_by_other(cluster: &Cluster, fault: f64, from: u64) -> Result<Option<f64>> {
    let world = cluster.aws()?;
    Ok(world
        .claims()?
        .into_iter()
        .filter(|c| {
            c.action == "AssociateAddress"
                && c.status == 200
                && c.arrived >= fault
                && world.claimer(c).is_some_and(|id| id != from)
        })
        .map(|c| c.answered - fault)
        .reduce(f64::min))
}

// ---- output -------------------------------------------------------------------------------------

fn print_trial(t: &Trial) {
    say(&format!(
        "{} {:?} #{}: node {} -> node {} in {:.3} s (claim answered {}), split-brain {:.3} s{}{}",
        t.system,
        t.scenario,
        t.trial + 1,
        t.from_node,
        t.to_node,
        t.failover_s,
        t.claim_answered_s
            .map_or("-".into(), |s| format!("{s:.3} s")),
        t.split_brain_claims_s,
        t.split_brain_state_s
            .map_or(String::new(), |s| format!(" (VRRP state {s:.3} s)")),
        if t.restored_by_harness {
            "; EIP not back on the master after the heal"
        } else {
            ""
        }
    ));
}

fn print_idle(system: &str, nodes: &[IdleCost]) {
    for n in nodes {
        say(&format!(
            "{system} node {}: RSS {:.1} MiB, CPU {:.2} % of one core, peer links {:.0} B/s \
             (over {:.0} s)",
            n.node, n.rss_mib, n.cpu_percent_of_one_core, n.peer_bytes_per_s, n.seconds
        ));
    }
}

fn machine() -> BTreeMap<String, String> {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mut m = BTreeMap::new();
    m.insert("nproc".into(), sh("nproc"));
    m.insert("memory".into(), sh("free -h | sed -n 2p"));
    m.insert("kernel".into(), sh("uname -r"));
    m.insert(
        "cpu".into(),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
    );
    m.insert(
        "keepalived".into(),
        sh("keepalived --version 2>&1 | head -1"),
    );
    m
}

fn markdown(report: &Report) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Failover: fault → DescribeAddresses shows the Elastic IP on another node (polled every \
         {} ms); {} trials per row unless fewer succeeded.\n",
        EIP_POLL.as_millis(),
        report.trials_per_scenario
    );
    let _ = writeln!(
        text,
        "| scenario | system | trials | median s | p95 s | worst s | claim answered, median s | \
         split-brain s (claims) | split-brain s (VRRP state) | EIP left on a backup after heal |"
    );
    let _ = writeln!(text, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &report.rows {
        let scenario = match row.scenario {
            Scenario::Kill => "SIGKILL",
            Scenario::Stop => "SIGSTOP",
            Scenario::Partition => "partition",
            Scenario::Health => "health check fails",
        };
        let _ = writeln!(
            text,
            "| {scenario} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
            row.system,
            row.summary.trials,
            row.summary.median_s,
            row.summary.p95_s,
            row.summary.worst_s,
            row.claim_answered.median_s,
            row.split_brain_claims_s,
            row.split_brain_state_s
                .map_or("n/a".into(), |s| format!("{s:.3}")),
            if row.system == "ha-agent" {
                "n/a".to_string()
            } else {
                format!("{}/{}", row.restored_by_harness, row.summary.trials)
            }
        );
    }
    let _ = writeln!(
        text,
        "\nIdle cost per node (processes of the node: ha-agent; keepalived parent + VRRP child):\n"
    );
    let _ = writeln!(
        text,
        "| system | node | RSS MiB | CPU % of one core | peer-link bytes/s | window s |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|");
    for idle in &report.idle {
        for n in &idle.nodes {
            let _ = writeln!(
                text,
                "| {} | {} | {:.1} | {:.2} | {:.0} | {:.0} |",
                idle.system,
                n.node,
                n.rss_mib,
                n.cpu_percent_of_one_core,
                n.peer_bytes_per_s,
                n.seconds
            );
        }
    }
    let _ = writeln!(text, "\nScenarios:");
    let mut described = Vec::new();
    for row in &report.rows {
        if !described.contains(&row.scenario) {
            described.push(row.scenario);
            let _ = writeln!(text, "- {:?}: {}", row.scenario, row.scenario.describe());
        }
    }
    text
}
