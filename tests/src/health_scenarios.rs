//! The end-to-end scenarios of health checks, operator controls and notify hooks, one function
//! per `health_*`, `switchover_*` and `hooks_*` test in `tests/e2e.rs`.
//!
//! Every node gets a real local service: a tiny HTTP server (`python3 -m http.server`, bound to
//! 127.0.0.1 inside that node's network namespace) that [`Services`] starts, stops (SIGKILL of
//! the pid it started) and restarts, and an http `[[check]]` on it. Every node's hooks run one
//! script ([`HOOK_SCRIPT`]) that appends a line with the hook's environment to a file of that
//! node, which the tests read back ([`hook_lines`]).
//!
//! Where the Elastic IP points is asked of the emulator (DescribeAddresses), never the agents;
//! who claimed what comes from the fault proxy's claim log. Health, maintenance and `degraded`
//! come from each node's `ha-agent status --json`.
//!
//! Correctness is asserted; timings are printed with [`report`]. Deadlines are generous for a
//! loaded two-core machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;

use crate::aws::{self, wall_clock};
use crate::aws_scenarios::{ELASTIC_IP_POLL, RESOURCE_DEADLINE};
use crate::cluster::{Cluster, ClusterSpec};
use crate::command::{self, wait_with_timeout};
use crate::scenarios::ELECTION_DEADLINE;
use crate::status::{judge, Leader, Role, Status, Verdict};
use crate::system::report;

/// The port of every node's service, on 127.0.0.1 inside its own namespace.
pub const SERVICE_PORT: u16 = 8080;
/// The check every node runs on its service: probe every 500 ms, a probe fails after 250 ms,
/// 2 passes to turn up, 2 failures to turn down.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
const CHECK_RISE: u32 = 2;
const CHECK_FALL: u32 = 2;
/// How long until every node reports the health its service implies: `rise`/`fall` probes,
/// the advert to the peers, and room for load.
const HEALTH_DEADLINE: Duration = Duration::from_secs(15);
/// How long a hook may take to show in its file after the transition was observed.
const HOOK_DEADLINE: Duration = Duration::from_secs(10);
/// How long an operator command (`switchover`, `maintenance`) may run; it waits at most 10 s
/// for its effect itself.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(20);
/// How long nothing may move while every node is unhealthy.
const FROZEN_PERIOD: Duration = Duration::from_secs(6);
/// `[cluster] name` of every cluster the harness writes.
const CLUSTER_NAME: &str = "e2e";

/// The hook every node runs for every event: `$1` is the file to append to, `$2` the event the
/// hook was configured for. One line per run: `configured-event HA_AGENT_EVENT
/// HA_AGENT_NODE_ID HA_AGENT_ROLE HA_AGENT_TERM HA_AGENT_LEADER_ID HA_AGENT_CLUSTER`, an
/// empty value written as `-`.
pub const HOOK_SCRIPT: &str = "#!/bin/sh\n\
# Written by the ha-agent end-to-end harness: records one hook run per line.\n\
v() { if [ -n \"$1\" ]; then printf '%s' \"$1\"; else printf '-'; fi; }\n\
line=\"$2 $(v \"$HA_AGENT_EVENT\") $(v \"$HA_AGENT_NODE_ID\") $(v \"$HA_AGENT_ROLE\") \
$(v \"$HA_AGENT_TERM\") $(v \"$HA_AGENT_LEADER_ID\") $(v \"$HA_AGENT_CLUSTER\")\"\n\
printf '%s\\n' \"$line\" >> \"$1\"\n";

// ---- the services ---------------------------------------------------------------------------

/// One tiny HTTP server per node, inside the node's namespace. Dropping it kills every server
/// it started (declare it after the [`Cluster`], so that it goes before the network).
pub struct Services {
    python: PathBuf,
    nodes: BTreeMap<u64, Service>,
}

struct Service {
    namespace_command: std::process::Command,
    log: PathBuf,
    process: Option<Child>,
}

impl Services {
    /// Prepares (does not start) a server for every node of `cluster`, serving
    /// `<node dir>/www`, which holds an `index.html`.
    pub fn new(cluster: &Cluster) -> Result<Services> {
        let python = aws::moto_python()?;
        let mut nodes = BTreeMap::new();
        for id in cluster.ids() {
            let node_dir = cluster.dir().join(format!("node{id}"));
            let www = node_dir.join("www");
            fs::create_dir_all(&www).with_context(|| format!("cannot create {}", www.display()))?;
            fs::write(www.join("index.html"), format!("ok from node {id}\n"))?;
            let mut command = cluster.network().command_in(id, &python);
            command
                .args(["-m", "http.server"])
                .arg(SERVICE_PORT.to_string())
                .args(["--bind", "127.0.0.1", "--directory"])
                .arg(&www);
            nodes.insert(
                id,
                Service {
                    namespace_command: command,
                    log: node_dir.join("service.log"),
                    process: None,
                },
            );
        }
        Ok(Services { python, nodes })
    }

    fn service(&mut self, id: u64) -> Result<&mut Service> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("node {id} has no service"))
    }

    /// Starts node `id`'s server (`ip netns exec` execs the interpreter in place: the child's
    /// pid is the server's).
    pub fn start(&mut self, id: u64) -> Result<u32> {
        let python = self.python.clone();
        let service = self.service(id)?;
        ensure!(
            service.process.is_none(),
            "the service of node {id} already runs"
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&service.log)
            .with_context(|| format!("cannot open {}", service.log.display()))?;
        let child = service
            .namespace_command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the service of node {id} ({} -m http.server)",
                    python.display()
                )
            })?;
        let pid = child.id();
        service.process = Some(child);
        Ok(pid)
    }

    /// SIGKILLs node `id`'s server and reaps it.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        let service = self.service(id)?;
        let mut child = service
            .process
            .take()
            .ok_or_else(|| anyhow!("the service of node {id} is not running"))?;
        let _ = child.kill();
        let status = wait_with_timeout(&mut child, Duration::from_secs(10))?;
        ensure!(
            status.is_some(),
            "the service of node {id} (pid {}) survived SIGKILL for 10 s",
            child.id()
        );
        Ok(())
    }

    /// Whether node `id`'s server was started and has not exited.
    pub fn is_running(&mut self, id: u64) -> Result<bool> {
        let service = self.service(id)?;
        if let Some(child) = service.process.as_mut() {
            if child.try_wait()?.is_some() {
                service.process = None;
            }
        }
        Ok(service.process.is_some())
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for service in self.nodes.values_mut() {
            if let Some(mut child) = service.process.take() {
                let _ = child.kill();
                let _ = wait_with_timeout(&mut child, Duration::from_secs(10));
            }
        }
    }
}

// ---- health in the status -------------------------------------------------------------------

/// The health part of `ha-agent status --json` (parsed from [`Status::raw`]).
#[derive(Clone, Debug, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub degraded: bool,
    pub maintenance: bool,
    #[serde(default)]
    pub leader_reason: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckHealth>,
    #[serde(default)]
    pub peers: Vec<PeerHealth>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CheckHealth {
    pub name: String,
    pub up: bool,
    #[serde(default)]
    pub last_passed: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PeerHealth {
    pub id: u64,
    #[serde(default)]
    pub healthy: Option<bool>,
}

impl Health {
    pub fn of(status: &Status) -> Result<Health> {
        serde_json::from_str(&status.raw).with_context(|| {
            format!(
                "node {}: the status has no health fields: {}",
                status.node_id, status.raw
            )
        })
    }
}

/// Node `id`'s status and its health part.
pub fn health(cluster: &Cluster, id: u64) -> Result<(Status, Health)> {
    let status = cluster.status(id)?;
    let health = Health::of(&status)?;
    Ok((status, health))
}

/// Polls node `id`'s status every 100 ms until `accept` holds for it; returns that status.
fn wait_for_health(
    cluster: &mut Cluster,
    id: u64,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&Status, &Health) -> bool,
) -> Result<(Status, Health)> {
    let start = Instant::now();
    let mut last = String::from("no observation");
    while start.elapsed() < timeout {
        if !cluster.is_running(id)? {
            bail!(cluster.diagnose(&format!("node {id} stopped while waiting for {what}")));
        }
        match health(cluster, id) {
            Ok((status, health)) if accept(&status, &health) => {
                cluster.note(format!("node {id}: {what} ({status})"));
                return Ok((status, health));
            }
            Ok((status, _)) => last = status.raw,
            Err(error) => last = format!("{error:#}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!(cluster.diagnose(&format!(
        "timed out after {} ms waiting for node {id}: {what}; last status: {last}",
        start.elapsed().as_millis()
    )))
}

/// Waits until every node in `ids` reports `healthy == want`.
pub fn wait_for_all_health(cluster: &mut Cluster, ids: &[u64], want: bool) -> Result<Duration> {
    let start = Instant::now();
    let what = if want {
        "reports healthy"
    } else {
        "reports unhealthy"
    };
    for &id in ids {
        let left = HEALTH_DEADLINE.saturating_sub(start.elapsed());
        wait_for_health(cluster, id, what, left, |_, health| health.healthy == want)?;
    }
    Ok(start.elapsed())
}

// ---- launching ------------------------------------------------------------------------------

/// An http `[[check]]` named `web` on a node's [`Services`] server; `None` leaves the agent's
/// default for that key.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebCheck {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

impl WebCheck {
    /// The check of the health scenarios: every 500 ms, 250 ms timeout, rise 2, fall 2.
    pub fn fast() -> WebCheck {
        WebCheck {
            interval: Some(CHECK_INTERVAL),
            timeout: Some(CHECK_TIMEOUT),
            rise: Some(CHECK_RISE),
            fall: Some(CHECK_FALL),
        }
    }

    /// The `[[check]]` table.
    pub fn table(&self) -> String {
        let mut text = format!(
            "\n[[check]]\n\
             name = \"web\"\n\
             type = \"http\"\n\
             url = \"http://127.0.0.1:{SERVICE_PORT}/\"\n"
        );
        if let Some(interval) = self.interval {
            let _ = writeln!(text, "interval = \"{}ms\"", interval.as_millis());
        }
        if let Some(timeout) = self.timeout {
            let _ = writeln!(text, "timeout = \"{}ms\"", timeout.as_millis());
        }
        if let Some(rise) = self.rise {
            let _ = writeln!(text, "rise = {rise}");
        }
        if let Some(fall) = self.fall {
            let _ = writeln!(text, "fall = {fall}");
        }
        text
    }
}

/// Appends `check` to every node's config and prepares (does not start) every node's
/// service. Call before the agents start.
pub fn add_web_check(cluster: &mut Cluster, check: &WebCheck) -> Result<Services> {
    for id in cluster.ids() {
        let path = cluster.config_path(id)?.to_path_buf();
        let mut text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.push_str(&check.table());
        cluster.write_config(id, &text)?;
    }
    Services::new(cluster)
}

/// The hooks every node's config gets: each appends to `hooks_file`.
fn hooks_table(script: &Path, hooks_file: &Path) -> String {
    let quote = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let script = quote(&script.to_string_lossy());
    let file = quote(&hooks_file.to_string_lossy());
    format!(
        "\n[hooks]\n\
         on-leader = [{script}, {file}, \"leader\"]\n\
         on-follower = [{script}, {file}, \"follower\"]\n\
         on-fault = [{script}, {file}, \"fault\"]\n\
         timeout = \"5s\"\n"
    )
}

/// Node `id`'s hook file.
fn hooks_file(cluster: &Cluster, id: u64) -> PathBuf {
    cluster.dir().join(format!("node{id}")).join("hooks.log")
}

/// Three voters with an AWS world, a service and a check on each, and the recording hooks;
/// starts every service, then every agent; waits for a leader, every resource on it (in the
/// emulator) and every node healthy.
fn launch_with_services(test: &str) -> Result<(Cluster, Services, Leader)> {
    let mut cluster = Cluster::new(test, ClusterSpec::three_voters().with_aws())?;
    let script = cluster.dir().join("record-hook.sh");
    fs::write(&script, HOOK_SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    for id in cluster.ids() {
        let path = cluster.config_path(id)?.to_path_buf();
        let mut text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.push_str("\n# Added by the health scenarios.\n");
        text.push_str(&hooks_table(&script, &hooks_file(&cluster, id)));
        cluster.write_config(id, &text)?;
    }
    let mut services = add_web_check(&mut cluster, &WebCheck::fast())?;
    for id in cluster.ids() {
        let pid = services.start(id)?;
        cluster.note(format!(
            "node {id}: service started, pid {pid} (http://127.0.0.1:{SERVICE_PORT}/ in its namespace)"
        ));
    }
    let started = Instant::now();
    for id in cluster.ids() {
        cluster.start(id)?;
    }
    let all = cluster.ids();
    cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    let elected = started.elapsed();
    // Checks start down, so the first leader may be elected before its own checks have risen
    // and then hand off to a peer that is healthy first. Settle once everyone is healthy: the
    // leader then stays the leader (nothing to hand off for).
    wait_for_all_health(&mut cluster, &all, true)?;
    let leader = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    cluster.wait_for_resources_on(leader.id, Some(leader.term), RESOURCE_DEADLINE)?;
    let placed = started.elapsed();
    report(&format!(
        "{test}: first leader elected {} ms after start; every node healthy and every resource \
         on {leader} after {} ms (checked again at {} ms)",
        elected.as_millis(),
        placed.as_millis(),
        started.elapsed().as_millis()
    ));
    Ok((cluster, services, leader))
}

/// Stops node `id`'s service and notes it.
fn stop_service(cluster: &mut Cluster, services: &mut Services, id: u64) -> Result<()> {
    services.stop(id)?;
    cluster.note(format!("node {id}: service stopped (SIGKILL)"));
    Ok(())
}

fn start_service(cluster: &mut Cluster, services: &mut Services, id: u64) -> Result<()> {
    let pid = services.start(id)?;
    cluster.note(format!("node {id}: service started again, pid {pid}"));
    Ok(())
}

// ---- operator commands ----------------------------------------------------------------------

/// How an operator command ended.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "exit {:?} after {} ms; stdout: {:?}; stderr: {:?}",
            self.code,
            self.took.as_millis(),
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// `ha-agent ARGS --socket <node via's socket>`, from the host (the socket is a file).
fn operator(cluster: &mut Cluster, via: u64, args: &[&str]) -> Result<Outcome> {
    let mut command = std::process::Command::new(cluster.binary());
    command
        .args(args)
        .arg("--socket")
        .arg(cluster.socket_path(via)?);
    let start = Instant::now();
    let output = command::run(&mut command, None, OPERATOR_TIMEOUT)
        .with_context(|| format!("`ha-agent {}` through node {via}", args.join(" ")))?;
    let outcome = Outcome {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: output.stderr,
        took: start.elapsed(),
    };
    cluster.note(format!(
        "operator: `ha-agent {}` through node {via}: {}",
        args.join(" "),
        outcome.describe()
    ));
    Ok(outcome)
}

/// Fails unless `outcome` exited with `code`.
fn expect_exit(cluster: &mut Cluster, what: &str, outcome: &Outcome, code: i32) -> Result<()> {
    if outcome.code != Some(code) {
        bail!(cluster.diagnose(&format!(
            "`{what}` should exit {code}: {}",
            outcome.describe()
        )));
    }
    Ok(())
}

// ---- the scenarios --------------------------------------------------------------------------

/// Stop the leader's service: the Elastic IP (in the emulator) moves to a node whose service
/// is up, which reports role leader and healthy; the old leader reports unhealthy and follows.
pub fn health_unhealthy_leader_hands_off_and_eip_follows() -> Result<()> {
    let test = "health_unhealthy_leader_hands_off_and_eip_follows";
    let (mut cluster, mut services, first) = launch_with_services(test)?;

    stop_service(&mut cluster, &mut services, first.id)?;
    let stopped = Instant::now();
    let holder =
        cluster.wait_for_elastic_ip_to_leave(first.id, RESOURCE_DEADLINE, ELASTIC_IP_POLL)?;
    let eip_after = stopped.elapsed();
    ensure!(
        services.is_running(holder)?,
        "the Elastic IP went to node {holder}, whose service is not running"
    );
    let all = cluster.ids();
    let second = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        second.id == holder && second.term > first.term,
        "the Elastic IP went to node {holder}, but the group agrees on {second} (was {first})"
    );
    cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    let all_after = stopped.elapsed();
    let (status, health) = health(&cluster, second.id)?;
    ensure!(
        status.role == Role::Leader && health.healthy && !health.degraded,
        "the new leader should be a healthy leader: {}",
        status.raw
    );
    let (old, old_health) = wait_for_health(
        &mut cluster,
        first.id,
        "reports unhealthy and follows the new leader",
        HEALTH_DEADLINE,
        |status, health| {
            !health.healthy && status.role == Role::Follower && status.leader_id == Some(second.id)
        },
    )?;
    ensure!(
        old_health.checks.iter().any(|check| !check.up),
        "the old leader is unhealthy, but no check of it is down: {}",
        old.raw
    );
    report(&format!(
        "{test}: service of leader {first} stopped; Elastic IP on node {holder} after {} ms \
         (DescribeAddresses every {} ms; check every {} ms, fall {CHECK_FALL}); every resource \
         on {second} after {} ms; leader reason: {}",
        eip_after.as_millis(),
        ELASTIC_IP_POLL.as_millis(),
        CHECK_INTERVAL.as_millis(),
        all_after.as_millis(),
        health.leader_reason.as_deref().unwrap_or("(none)")
    ));
    drop(services);
    cluster.finish()
}

/// Stop every service (the followers' first, so that the leader is the last to turn
/// unhealthy and has no healthy peer to hand to): for [`FROZEN_PERIOD`] the leader, its term
/// and every resource stay, no other node claims anything, and the leader reports degraded.
/// The leader's service back: it is healthy again, not degraded; then the others' services:
/// every node is healthy and the leader still leads.
pub fn health_all_unhealthy_nothing_moves() -> Result<()> {
    let test = "health_all_unhealthy_nothing_moves";
    let (mut cluster, mut services, leader) = launch_with_services(test)?;
    let all = cluster.ids();
    let followers = cluster.others(leader.id);

    for &id in &followers {
        stop_service(&mut cluster, &mut services, id)?;
    }
    wait_for_all_health(&mut cluster, &followers, false)?;
    wait_for_health(
        &mut cluster,
        leader.id,
        "sees every peer unhealthy",
        HEALTH_DEADLINE,
        |_, health| {
            followers.iter().all(|id| {
                health
                    .peers
                    .iter()
                    .any(|peer| peer.id == *id && peer.healthy == Some(false))
            })
        },
    )?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == leader,
        "leadership moved from {leader} to {agreed} while only the followers were unhealthy"
    );

    let claims_before = cluster.aws()?.claims()?.len();
    let expected = cluster.aws()?.holders()?;
    ensure!(
        expected.all_on(leader.id, None),
        "every resource should point at {leader}: {expected}"
    );
    stop_service(&mut cluster, &mut services, leader.id)?;
    let stopped = Instant::now();
    let stopped_wall = wall_clock();

    let mut degraded_after = None;
    let interval = Duration::from_millis(200);
    let rounds = FROZEN_PERIOD.as_millis() / interval.as_millis() + 2;
    for _ in 0..rounds {
        let holders = cluster.aws()?.holders()?;
        if holders != expected {
            bail!(cluster.diagnose(&format!(
                "every node is unhealthy, yet the resources moved: {expected} became {holders}"
            )));
        }
        let mut statuses = Vec::new();
        for &id in &all {
            statuses.push(cluster.status(id)?);
        }
        let verdict = judge(&statuses);
        if verdict != Verdict::Agreed(leader) {
            bail!(cluster.diagnose(&format!(
                "every node is unhealthy, yet leadership changed from {leader}: {verdict:?}"
            )));
        }
        if degraded_after.is_none() {
            let leader_status = statuses
                .iter()
                .find(|status| status.node_id == leader.id)
                .ok_or_else(|| anyhow!("no status of the leader"))?;
            let health = Health::of(leader_status)?;
            if health.degraded {
                ensure!(
                    !health.healthy,
                    "the leader reports degraded while healthy: {}",
                    leader_status.raw
                );
                degraded_after = Some(stopped.elapsed());
                cluster.note(format!("node {}: reports degraded", leader.id));
            }
        }
        if stopped.elapsed() >= FROZEN_PERIOD {
            break;
        }
        thread::sleep(interval);
    }
    let Some(degraded_after) = degraded_after else {
        bail!(cluster.diagnose(&format!(
            "the leader {leader} did not report degraded within {} ms of its service stopping \
             while every peer was unhealthy",
            FROZEN_PERIOD.as_millis()
        )));
    };
    let claims = cluster.aws()?.claims()?;
    let new = &claims[claims_before.min(claims.len())..];
    let attributed = cluster.aws()?.attribute(new)?;
    let foreign: Vec<_> = attributed
        .iter()
        .filter(|(node, _)| *node != leader.id)
        .map(|(_, claim)| claim.clone())
        .collect();
    if !foreign.is_empty() {
        let listing = cluster.aws()?.describe_claims(&foreign, stopped_wall);
        bail!(cluster.diagnose(&format!(
            "every node is unhealthy, yet another node than the leader {leader} claimed \
             (ms after the last service stopped):\n{listing}"
        )));
    }
    report(&format!(
        "{test}: every service stopped (the leader's last); for {} ms {leader} kept leading and \
         every resource, {} claim(s) by it and none by another node; degraded reported {} ms \
         after its service stopped",
        stopped.elapsed().as_millis(),
        attributed.len(),
        degraded_after.as_millis()
    ));

    // The leader's service first: were a peer healthy before the leader, the still unhealthy
    // leader would rightly hand the resources to it.
    let restarted = Instant::now();
    start_service(&mut cluster, &mut services, leader.id)?;
    wait_for_health(
        &mut cluster,
        leader.id,
        "is a healthy, not degraded leader again",
        HEALTH_DEADLINE,
        |status, health| status.role == Role::Leader && health.healthy && !health.degraded,
    )?;
    let leader_back = restarted.elapsed();
    for &id in &followers {
        start_service(&mut cluster, &mut services, id)?;
    }
    wait_for_all_health(&mut cluster, &all, true)?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == leader,
        "after the services came back, leadership moved from {leader} to {agreed}"
    );
    let holders = cluster.aws()?.holders()?;
    ensure!(
        holders.all_on(leader.id, None),
        "after the services came back, the resources moved away from {leader}: {holders}"
    );
    report(&format!(
        "{test}: the leader's service back: {leader} a healthy, not degraded leader again \
         after {} ms; the others' services back: every node healthy, still {leader}, after {} ms",
        leader_back.as_millis(),
        restarted.elapsed().as_millis()
    ));
    drop(services);
    cluster.finish()
}

/// `switchover --to X` through a third node's socket moves the Elastic IP to X (in the
/// emulator); `--to` an unknown id is refused (4) with a reason; with maintenance on, every
/// node says so and a switchover is refused (4) and moves nothing; with maintenance off,
/// switchover works again.
pub fn switchover_to_moves_the_eip_on_command() -> Result<()> {
    let test = "switchover_to_moves_the_eip_on_command";
    let (mut cluster, services, first) = launch_with_services(test)?;
    let all = cluster.ids();
    let others = cluster.others(first.id);
    let (target, via) = (others[0], others[1]);

    let target_text = target.to_string();
    let outcome = operator(&mut cluster, via, &["switchover", "--to", &target_text])?;
    expect_exit(&mut cluster, "switchover --to", &outcome, 0)?;
    let commanded = Instant::now();
    let holders = cluster.wait_for_resources_on(target, None, RESOURCE_DEADLINE)?;
    let second = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        second.id == target && second.term > first.term,
        "after `switchover --to {target}` the group agrees on {second} (was {first})"
    );
    report(&format!(
        "{test}: `switchover --to {target}` through node {via} exited 0 after {} ms; every \
         resource on node {target} {} ms after that ({holders})",
        outcome.took.as_millis(),
        commanded.elapsed().as_millis()
    ));

    let outcome = operator(&mut cluster, via, &["switchover", "--to", "9"])?;
    expect_exit(&mut cluster, "switchover --to 9", &outcome, 4)?;
    ensure!(
        !outcome.stderr.trim().is_empty(),
        "`switchover --to 9` exited 4 without a reason: {}",
        outcome.describe()
    );
    report(&format!(
        "{test}: `switchover --to 9` (no such node) refused: {}",
        outcome.stderr.trim()
    ));

    let outcome = operator(&mut cluster, first.id, &["maintenance", "on"])?;
    expect_exit(&mut cluster, "maintenance on", &outcome, 0)?;
    for &id in &all {
        wait_for_health(
            &mut cluster,
            id,
            "reports maintenance on",
            HEALTH_DEADLINE,
            |_, health| health.maintenance,
        )?;
        let text = cluster.status_text(id)?;
        let first_line = text.lines().next().unwrap_or_default();
        ensure!(
            first_line.to_lowercase().contains("maintenance"),
            "node {id}: `ha-agent status` should say maintenance on its first line: {text}"
        );
    }
    let back = first.id.to_string();
    let outcome = operator(&mut cluster, via, &["switchover", "--to", &back])?;
    expect_exit(&mut cluster, "switchover during maintenance", &outcome, 4)?;
    let refusal = outcome.stderr.trim().to_string();
    cluster.assert_resources_stable(target, Duration::from_secs(2))?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == second,
        "during maintenance leadership moved from {second} to {agreed}"
    );
    report(&format!(
        "{test}: maintenance on everywhere; `switchover --to {back}` refused after {} ms: {refusal}",
        outcome.took.as_millis()
    ));

    let outcome = operator(&mut cluster, target, &["maintenance", "off"])?;
    expect_exit(&mut cluster, "maintenance off", &outcome, 0)?;
    for &id in &all {
        wait_for_health(
            &mut cluster,
            id,
            "reports maintenance off",
            HEALTH_DEADLINE,
            |_, health| !health.maintenance,
        )?;
    }
    let outcome = operator(&mut cluster, via, &["switchover", "--to", &back])?;
    expect_exit(&mut cluster, "switchover after maintenance", &outcome, 0)?;
    cluster.wait_for_resources_on(first.id, None, RESOURCE_DEADLINE)?;
    report(&format!(
        "{test}: maintenance off; `switchover --to {back}` exited 0 after {} ms and every \
         resource is back on node {back}",
        outcome.took.as_millis()
    ));
    drop(services);
    cluster.finish()
}

/// One line of a hook file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookLine {
    /// The hook as configured (`leader`, `follower`, `fault`), from its argv.
    pub configured: String,
    /// `HA_AGENT_EVENT`.
    pub event: String,
    pub node: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub cluster: String,
}

impl std::fmt::Display for HookLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (event {}) node {} role {} term {} leader {} cluster {}",
            self.configured,
            self.event,
            self.node,
            self.role,
            self.term,
            self.leader.map_or("-".to_string(), |id| id.to_string()),
            self.cluster
        )
    }
}

/// The lines of node `id`'s hook file (none if it does not exist yet).
pub fn hook_lines(cluster: &Cluster, id: u64) -> Result<Vec<HookLine>> {
    let path = hooks_file(cluster, id);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [configured, event, node, role, term, leader, cluster] = fields[..] else {
                bail!("{}: malformed line {line:?}", path.display());
            };
            Ok(HookLine {
                configured: configured.to_string(),
                event: event.to_string(),
                node: node
                    .parse()
                    .with_context(|| format!("HA_AGENT_NODE_ID in {line:?}"))?,
                role: role.to_string(),
                term: term
                    .parse()
                    .with_context(|| format!("HA_AGENT_TERM in {line:?}"))?,
                leader: match leader {
                    "-" => None,
                    id => Some(
                        id.parse()
                            .with_context(|| format!("HA_AGENT_LEADER_ID in {line:?}"))?,
                    ),
                },
                cluster: cluster.to_string(),
            })
        })
        .collect()
}

fn listing(lines: &[HookLine]) -> String {
    if lines.is_empty() {
        return "    (no hook ran)".to_string();
    }
    lines
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls node `id`'s hook file until `accept` holds for its lines.
fn wait_for_hooks(
    cluster: &mut Cluster,
    id: u64,
    what: &str,
    accept: impl Fn(&[HookLine]) -> bool,
) -> Result<Vec<HookLine>> {
    let start = Instant::now();
    loop {
        let lines = hook_lines(cluster, id)?;
        if accept(&lines) {
            cluster.note(format!("node {id}: hooks show {what}"));
            return Ok(lines);
        }
        if start.elapsed() >= HOOK_DEADLINE {
            bail!(cluster.diagnose(&format!(
                "node {id}: the hooks did not show {what} within {} ms; its hook file:\n{}",
                start.elapsed().as_millis(),
                listing(&lines)
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What every line must satisfy: the node and cluster are right, the environment's event is
/// the configured hook's, and the role fits the event (`leader`: role leader and its own id as
/// leader id; `follower`: not leader, and another node as leader if one is known).
fn check_lines(id: u64, lines: &[HookLine]) -> std::result::Result<(), String> {
    for line in lines {
        let fits = match line.configured.as_str() {
            "leader" => line.role == "leader" && line.leader == Some(id),
            "follower" => line.role != "leader" && line.leader != Some(id),
            "fault" => true,
            _ => false,
        };
        if line.node != id
            || line.cluster != CLUSTER_NAME
            || line.event != line.configured
            || line.term == 0
            || !fits
        {
            return Err(format!("node {id}: wrong hook environment: {line}"));
        }
    }
    Ok(())
}

/// After the first election, stop the leader's service (it turns faulty and hands off), then
/// start it again (it follows): every node's hook file has the right environment, in order.
/// The first leader: `leader` in the first term, later `fault`, later `follower` of the new
/// leader, and nothing after that. The new leader: `leader` last, in its term. The third node:
/// only `follower`.
pub fn hooks_run_with_the_right_environment_in_order() -> Result<()> {
    let test = "hooks_run_with_the_right_environment_in_order";
    let (mut cluster, mut services, first) = launch_with_services(test)?;
    let all = cluster.ids();

    wait_for_hooks(
        &mut cluster,
        first.id,
        "leader in the first term",
        |lines| {
            lines
                .iter()
                .any(|line| line.configured == "leader" && line.term == first.term)
        },
    )?;

    stop_service(&mut cluster, &mut services, first.id)?;
    let holder =
        cluster.wait_for_elastic_ip_to_leave(first.id, RESOURCE_DEADLINE, ELASTIC_IP_POLL)?;
    let second = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        second.id == holder && second.term > first.term,
        "the Elastic IP went to node {holder}, but the group agrees on {second} (was {first})"
    );
    cluster.wait_for_resources_on(second.id, Some(second.term), RESOURCE_DEADLINE)?;
    let third = *all
        .iter()
        .find(|&&id| id != first.id && id != second.id)
        .ok_or_else(|| anyhow!("no third node"))?;

    start_service(&mut cluster, &mut services, first.id)?;
    wait_for_health(
        &mut cluster,
        first.id,
        "reports healthy and follows the new leader",
        HEALTH_DEADLINE,
        |status, health| {
            health.healthy && status.role == Role::Follower && status.leader_id == Some(second.id)
        },
    )?;
    let agreed = cluster.wait_for_single_leader(&all, ELECTION_DEADLINE)?;
    ensure!(
        agreed == second,
        "after node {} was healthy again, leadership moved from {second} to {agreed}",
        first.id
    );

    // The first leader: leader(first term) … fault … follower(second leader), last.
    let old = wait_for_hooks(
        &mut cluster,
        first.id,
        "leader, then fault, then follower of the new leader",
        |lines| {
            lines
                .last()
                .is_some_and(|line| line.configured == "follower" && line.leader == Some(second.id))
        },
    )?;
    // The new leader: leader in its term, last.
    let new = wait_for_hooks(&mut cluster, second.id, "leader in its term", |lines| {
        lines
            .last()
            .is_some_and(|line| line.configured == "leader" && line.term == second.term)
    })?;
    let third_lines = wait_for_hooks(&mut cluster, third, "follower", |lines| {
        lines.iter().any(|line| line.configured == "follower")
    })?;
    // Later hooks must not change the picture: wait a little and read again.
    thread::sleep(Duration::from_millis(1500));
    let files: Vec<(u64, Vec<HookLine>)> = all
        .iter()
        .map(|&id| Ok((id, hook_lines(&cluster, id)?)))
        .collect::<Result<_>>()?;
    let dump = files
        .iter()
        .map(|(id, lines)| format!("  node {id}:\n{}", listing(lines)))
        .collect::<Vec<_>>()
        .join("\n");
    let fail = |cluster: &mut Cluster, reason: String| -> anyhow::Error {
        anyhow!(cluster.diagnose(&format!("{reason}\nhook files:\n{dump}")))
    };
    for (id, lines) in &files {
        if let Err(reason) = check_lines(*id, lines) {
            return Err(fail(&mut cluster, reason));
        }
    }
    let (_, old_now) = &files[all.iter().position(|&id| id == first.id).unwrap_or(0)];
    let (_, new_now) = &files[all.iter().position(|&id| id == second.id).unwrap_or(0)];
    let (_, third_now) = &files[all.iter().position(|&id| id == third).unwrap_or(0)];
    ensure!(
        old_now.len() >= old.len() && new_now.len() >= new.len(),
        "hook files shrank"
    );

    // The first leader, in order.
    let first_leader = old_now
        .iter()
        .position(|line| line.configured == "leader" && line.term == first.term);
    let fault = first_leader.and_then(|at| {
        old_now[at..]
            .iter()
            .position(|line| line.configured == "fault")
            .map(|offset| at + offset)
    });
    let follow = fault.and_then(|at| {
        old_now[at..]
            .iter()
            .position(|line| line.configured == "follower" && line.leader == Some(second.id))
            .map(|offset| at + offset)
    });
    let in_order = match (first_leader, fault, follow) {
        (Some(_), Some(fault), Some(follow)) => {
            follow == old_now.len() - 1
                && old_now[fault].term >= first.term
                && old_now[follow].term == second.term
                && old_now[follow].role == "follower"
                && !old_now[fault..]
                    .iter()
                    .any(|line| line.configured == "leader")
        }
        _ => false,
    };
    if !in_order {
        return Err(fail(
            &mut cluster,
            format!(
                "node {} (first leader {first}, service stopped and restarted) should have run \
                 leader (term {}), then fault, then follower of node {} (term {}) last",
                first.id, first.term, second.id, second.term
            ),
        ));
    }
    // The new leader: its last hook is leader in its term, and it never turned faulty.
    let new_ok = new_now
        .last()
        .is_some_and(|line| line.configured == "leader" && line.term == second.term)
        && !new_now.iter().any(|line| line.configured == "fault");
    if !new_ok {
        return Err(fail(
            &mut cluster,
            format!(
                "node {} (new leader {second}) should have run leader (term {}) last, and no \
                 fault",
                second.id, second.term
            ),
        ));
    }
    let third_ok =
        !third_now.is_empty() && third_now.iter().all(|line| line.configured == "follower");
    if !third_ok {
        return Err(fail(
            &mut cluster,
            format!("node {third} (never leader, always healthy) should have run only follower"),
        ));
    }
    ensure!(
        !third_lines.is_empty(),
        "node {third}: no follower hook ran"
    );
    report(&format!("{test}: hooks in order\n{dump}"));
    drop(services);
    cluster.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_script_is_valid_shell() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ha-e2e-hook-test-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let script = dir.join("record-hook.sh");
        fs::write(&script, HOOK_SCRIPT)?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        let out = dir.join("hooks.log");
        let status = std::process::Command::new(&script)
            .arg(&out)
            .arg("leader")
            .env("HA_AGENT_EVENT", "leader")
            .env("HA_AGENT_NODE_ID", "2")
            .env("HA_AGENT_ROLE", "leader")
            .env("HA_AGENT_TERM", "7")
            .env("HA_AGENT_LEADER_ID", "")
            .env("HA_AGENT_CLUSTER", "e2e")
            .status()?;
        assert!(status.success());
        let text = fs::read_to_string(&out)?;
        fs::remove_dir_all(&dir)?;
        assert_eq!(text, "leader leader 2 leader 7 - e2e\n");
        Ok(())
    }

    #[test]
    fn health_tables_parse_as_toml() {
        let text = hooks_table(Path::new("/tmp/x y/hook.sh"), Path::new("/tmp/h.log"))
            + &WebCheck::fast().table();
        let value: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(value["check"][0]["type"].as_str(), Some("http"));
        assert_eq!(value["check"][0]["interval"].as_str(), Some("500ms"));
        assert_eq!(value["check"][0]["fall"].as_integer(), Some(2));
        assert_eq!(value["hooks"]["on-fault"][2].as_str(), Some("fault"));
        let defaults: toml::Value =
            toml::from_str(&WebCheck::default().table()).expect("valid TOML");
        let check = defaults["check"][0].as_table().expect("a table");
        assert_eq!(check.len(), 3, "only name, type and url: {check:?}");
    }
}
