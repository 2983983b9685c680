//! A group of `ha-agent run` processes, one per network namespace, and the operations the
//! tests apply to them: start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM, partitions, status polls,
//! and, for a cluster with an AWS world ([`ClusterSpec::with_aws`]), observations of the
//! floating resources through the emulator's API.
//!
//! Fail closed: every config the harness writes has `aws.endpoint-url` (the cluster's fault
//! proxy, or, without an AWS world, a port on the bridge address where nothing listens), and
//! [`Cluster::start`] refuses a config whose endpoint is missing or not local
//! ([`crate::aws::check_agent_config`]). Agents get the emulator's static credentials and no
//! other `AWS_*` variable.
//!
//! Every wait is bounded in time and in rounds. When a wait fails, its error carries every
//! node's state, last status and log tail, and the harness's own event log. A [`Cluster`]
//! that is dropped kills its agents and removes its network; its directory (configs, state,
//! logs) is deleted only after [`Cluster::finish`] succeeded, and kept (path printed) otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::aws::{self, wall_clock, AwsWorld, Holder, Holders};
use crate::command::{self, wait_with_timeout};
use crate::network::{Direction, Network};
use crate::status::{judge, Leader, Role, Status, Verdict};
use crate::system::{agent_binary, require_root, tail};

/// The port every agent listens on, inside its own namespace.
pub const AGENT_PORT: u16 = 7946;
/// How often the waits poll statuses unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long one `ha-agent status` call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines of each agent's log quoted in failure messages.
const LOG_TAIL_LINES: usize = 40;
/// Harness events kept in memory for failure messages.
const EVENTS_KEPT: usize = 60;
/// Longest path a Unix socket address can hold (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The port of `aws.endpoint-url` in clusters without an AWS world: on the bridge address,
/// where nothing listens, so that an AWS call an agent should not make fails at once.
const NO_EMULATOR_PORT: u16 = 1;
/// How often [`Cluster::wait_for_resources_on`] asks the emulator.
const RESOURCE_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Claims quoted in failure messages.
const CLAIMS_QUOTED: usize = 30;

/// A node's Raft membership, as written to its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    Voter,
    Witness,
}

impl NodeRole {
    fn as_config(self) -> &'static str {
        match self {
            NodeRole::Voter => "voter",
            NodeRole::Witness => "witness",
        }
    }
}

/// One node of a [`ClusterSpec`].
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// 1..=9: the node's address is `.1<id>`.
    pub id: u64,
    pub role: NodeRole,
    pub priority: u32,
}

/// What a [`Cluster`] is made of: its nodes and Raft timings.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `[cluster] name` in every config.
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// Whether the cluster gets an AWS world: the emulator, a fault proxy, one instance per
    /// node, an Elastic IP, a Route53 record and a leader parameter in every config.
    pub aws: bool,
    /// `aws.reconcile-interval` in every config; `None` leaves the agent's default (10 s).
    pub reconcile_interval: Option<Duration>,
    /// `cluster.min-hand-off-interval` in every config; `None` leaves the agent's default (30 s).
    pub min_hand_off_interval: Option<Duration>,
}

impl ClusterSpec {
    /// `count` voters with ids 1..=count, equal priorities, heartbeat 100 ms, election 1 s.
    pub fn voters(count: u64) -> ClusterSpec {
        ClusterSpec {
            name: "e2e".to_string(),
            nodes: (1..=count)
                .map(|id| NodeSpec {
                    id,
                    role: NodeRole::Voter,
                    priority: 100,
                })
                .collect(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            aws: false,
            reconcile_interval: None,
            min_hand_off_interval: None,
        }
    }

    /// Three voters: the smallest group that survives the loss of one.
    pub fn three_voters() -> ClusterSpec {
        ClusterSpec::voters(3)
    }

    pub fn with_election_timeout(mut self, timeout: Duration) -> ClusterSpec {
        self.election_timeout = timeout;
        self
    }

    pub fn with_heartbeat_interval(mut self, interval: Duration) -> ClusterSpec {
        self.heartbeat_interval = interval;
        self
    }

    /// With an AWS world (see [`ClusterSpec::aws`]).
    pub fn with_aws(mut self) -> ClusterSpec {
        self.aws = true;
        self
    }

    /// With `aws.reconcile-interval = interval` (at least 1 s, the agent's minimum).
    pub fn with_reconcile_interval(mut self, interval: Duration) -> ClusterSpec {
        self.reconcile_interval = Some(interval);
        self
    }

    /// With `cluster.min-hand-off-interval = interval` (at least two election timeouts).
    pub fn with_min_hand_off_interval(mut self, interval: Duration) -> ClusterSpec {
        self.min_hand_off_interval = Some(interval);
        self
    }
}

/// How a node's agent process ended, as observed by [`Cluster::terminate`].
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// When the harness saw the exit (polled every 2 ms).
    pub at: Instant,
    /// From the signal to the observed exit.
    pub after: Duration,
}

struct Node {
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    process: Option<Child>,
    paused: bool,
    /// How the last process ended, if the harness saw it end.
    last_exit: Option<String>,
    starts: u32,
}

impl Node {
    fn pid(&self) -> Option<Pid> {
        let id = self.process.as_ref()?.id();
        i32::try_from(id).ok().map(Pid::from_raw)
    }
}

/// A running (or runnable) group of agents in network namespaces. See the module docs.
pub struct Cluster {
    test_name: String,
    spec: ClusterSpec,
    binary: PathBuf,
    dir: PathBuf,
    created: Instant,
    /// [`Cluster::created`] on the wall clock (seconds since the epoch), the time base of the
    /// fault proxy's claim records.
    created_wall: f64,
    nodes: BTreeMap<u64, Node>,
    events: VecDeque<String>,
    passed: bool,
    /// Dropped after `Drop for Cluster` has killed the agents, before the network: the fault
    /// proxy listens on the bridge.
    aws: Option<AwsWorld>,
    /// Declared last: dropped after `Drop for Cluster` has killed the agents.
    network: Network,
}

impl Cluster {
    /// Creates the network, the directory and every node's config, secret and state
    /// directory, without starting any agent. `test_name` names the directory and messages.
    pub fn new(test_name: &str, spec: ClusterSpec) -> Result<Cluster> {
        require_root()?;
        let binary = agent_binary()?;
        ensure!(spec.nodes.len() >= 2, "a cluster needs at least two nodes");
        let ids: Vec<u64> = spec.nodes.iter().map(|node| node.id).collect();
        let network = Network::create(&ids)?;
        let dir = create_run_dir(test_name, network.tag())?;
        let aws = if spec.aws {
            match AwsWorld::create(&network, &dir, &spec.name) {
                Ok(world) => Some(world),
                Err(error) => {
                    eprintln!(
                        "harness: test {test_name} did not pass; its files are kept in {}",
                        dir.display()
                    );
                    return Err(error);
                }
            }
        } else {
            None
        };
        let mut cluster = Cluster {
            test_name: test_name.to_string(),
            spec,
            binary,
            dir,
            created: Instant::now(),
            created_wall: wall_clock(),
            nodes: BTreeMap::new(),
            events: VecDeque::new(),
            passed: false,
            aws,
            network,
        };
        // From here on an error drops `cluster`: the network goes, the directory is kept.
        cluster.write_files()?;
        cluster.note(format!(
            "created: subnet {}, bridge {}, binary {}, directory {}",
            cluster.network.subnet(),
            cluster.network.bridge(),
            cluster.binary.display(),
            cluster.dir.display()
        ));
        if let Some(world) = &cluster.aws {
            let text = format!(
                "AWS world: emulator {}, fault proxy {}, VPC {} subnet {}, Elastic IP {} ({}), \
                 zone {} ({}), record {}, leader parameter {}",
                world.emulator().endpoint(),
                world.agent_endpoint(),
                world.vpc_id,
                world.subnet_id,
                world.allocation_id,
                world.public_ip,
                world.zone_id,
                world.zone_name,
                world.record_name,
                world.leader_parameter
            );
            cluster.note(text);
            for id in cluster.ids() {
                let node = cluster.aws()?.node(id)?.clone();
                cluster.note(format!(
                    "node {id}: instance {}, interface {}, private IP {}",
                    node.instance_id, node.network_interface_id, node.private_ip
                ));
            }
        }
        Ok(cluster)
    }

    /// [`Cluster::new`], then starts every node.
    pub fn launch(test_name: &str, spec: ClusterSpec) -> Result<Cluster> {
        let mut cluster = Cluster::new(test_name, spec)?;
        for id in cluster.ids() {
            cluster.start(id)?;
        }
        Ok(cluster)
    }

    fn write_files(&mut self) -> Result<()> {
        let secret_file = self.dir.join("cluster.key");
        write_secret(&secret_file)?;
        for spec in self.spec.nodes.clone() {
            let node_dir = self.dir.join(format!("node{}", spec.id));
            let state_dir = node_dir.join("state");
            fs::create_dir_all(&state_dir)
                .with_context(|| format!("cannot create {}", state_dir.display()))?;
            fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700))?;
            let socket = node_dir.join("status.sock");
            ensure!(
                socket.as_os_str().len() <= MAX_SOCKET_PATH,
                "status socket path {} is too long for a Unix socket: set TMPDIR to a short path",
                socket.display()
            );
            let config = node_dir.join("config.toml");
            let text = self.render_config(&spec, &secret_file, &state_dir, &socket)?;
            fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            self.nodes.insert(
                spec.id,
                Node {
                    config,
                    socket,
                    log: node_dir.join("agent.log"),
                    process: None,
                    paused: false,
                    last_exit: None,
                    starts: 0,
                },
            );
        }
        Ok(())
    }

    fn render_config(
        &self,
        node: &NodeSpec,
        secret_file: &Path,
        state_dir: &Path,
        socket: &Path,
    ) -> Result<String> {
        let mut text = format!(
            "# Written by the ha-agent end-to-end harness for test {test}.\n\
             [cluster]\n\
             name = {name}\n\
             secret-file = {secret}\n\
             heartbeat-interval = \"{heartbeat}ms\"\n\
             election-timeout = \"{election}ms\"\n\
             {hand_off}\
             \n\
             [node]\n\
             id = {id}\n\
             listen = \"{address}:{AGENT_PORT}\"\n\
             state-dir = {state}\n\
             role = \"{role}\"\n\
             priority = {priority}\n",
            test = self.test_name,
            name = toml_string(&self.spec.name),
            secret = toml_string(&secret_file.to_string_lossy()),
            heartbeat = self.spec.heartbeat_interval.as_millis(),
            election = self.spec.election_timeout.as_millis(),
            hand_off = self
                .spec
                .min_hand_off_interval
                .map(|interval| format!("min-hand-off-interval = \"{}ms\"\n", interval.as_millis()))
                .unwrap_or_default(),
            id = node.id,
            address = self.network.address(node.id),
            state = toml_string(&state_dir.to_string_lossy()),
            role = node.role.as_config(),
            priority = node.priority,
        );
        for peer in self.spec.nodes.iter().filter(|peer| peer.id != node.id) {
            let _ = write!(
                text,
                "\n[[peer]]\nid = {}\naddress = \"{}:{AGENT_PORT}\"\n",
                peer.id,
                self.network.address(peer.id)
            );
        }
        let _ = write!(
            text,
            "\n[status]\nsocket = {}\n",
            toml_string(&socket.to_string_lossy())
        );
        match &self.aws {
            Some(world) => {
                text.push_str(&world.config_tables(node.id, self.spec.reconcile_interval)?)
            }
            None => {
                let _ = write!(
                    text,
                    "\n# No AWS world: calls (there should be none) go where nothing listens.\n\
                     [aws]\nendpoint-url = \"http://{}:{NO_EMULATOR_PORT}\"\n",
                    self.network.host_address()
                );
            }
        }
        Ok(text)
    }

    // ---- what the cluster is -------------------------------------------------------------

    /// Every node id, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Every node id except `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|&other| other != id)
            .collect()
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The directory with configs, state, logs and the harness's event log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn config_path(&self, id: u64) -> Result<&Path> {
        Ok(&self.node(id)?.config)
    }

    pub fn socket_path(&self, id: u64) -> Result<&Path> {
        Ok(&self.node(id)?.socket)
    }

    pub fn log_path(&self, id: u64) -> Result<&Path> {
        Ok(&self.node(id)?.log)
    }

    /// Replaces node `id`'s config file with `text` (the agent reads it at its next start).
    pub fn write_config(&mut self, id: u64, text: &str) -> Result<()> {
        let path = self.node(id)?.config.clone();
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        self.note(format!("node {id}: config rewritten by the test"));
        Ok(())
    }

    /// The cluster's AWS world; fails for a cluster without one.
    pub fn aws(&self) -> Result<&AwsWorld> {
        self.aws.as_ref().ok_or_else(|| {
            anyhow!("this cluster has no AWS world: create it with ClusterSpec::with_aws")
        })
    }

    /// The pid of node `id`'s agent, if the harness started one that has not been reaped.
    pub fn pid(&self, id: u64) -> Result<Option<u32>> {
        Ok(self.node(id)?.process.as_ref().map(Child::id))
    }

    fn node(&self, id: u64) -> Result<&Node> {
        self.nodes
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} is not part of this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("node {id} is not part of this cluster"))
    }

    // ---- processes --------------------------------------------------------------------------

    /// Starts node `id`'s agent: `ip netns exec NS ha-agent run --config CFG`, stdout and
    /// stderr appended to its log. Refuses a config without a local `aws.endpoint-url` (see the
    /// module docs); the agent's environment has the emulator's credentials and no other
    /// `AWS_*` variable.
    pub fn start(&mut self, id: u64) -> Result<()> {
        self.reap(id)?;
        let namespace = self.network.namespace(id);
        let binary = self.binary.clone();
        let elapsed = self.created.elapsed();
        let bridge = self.network.host_address();
        let node = self.node_mut(id)?;
        ensure!(node.process.is_none(), "node {id} is already running");
        let text = fs::read_to_string(&node.config)
            .with_context(|| format!("cannot read {}", node.config.display()))?;
        aws::check_agent_config(&text, bridge).with_context(|| {
            format!("refusing to start node {id} with {}", node.config.display())
        })?;
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        writeln!(
            log,
            "==== harness: start #{} of node {id} at {:.3} s ====",
            node.starts,
            elapsed.as_secs_f64()
        )?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(&namespace)
            .arg(&binary)
            .arg("run")
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        aws::set_agent_environment(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the agent of node {id}"))?;
        let pid = child.id();
        node.process = Some(child);
        node.paused = false;
        node.last_exit = None;
        self.note(format!("node {id}: started, pid {pid}"));
        Ok(())
    }

    /// SIGKILLs node `id`'s agent and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        let mut child = node
            .process
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let pid = child.id();
        // SIGKILL also ends a stopped process.
        let _ = child.kill();
        let status = wait_with_timeout(&mut child, Duration::from_secs(10))?;
        node.paused = false;
        let Some(status) = status else {
            bail!("node {id} (pid {pid}) survived SIGKILL for 10 s");
        };
        node.last_exit = Some(format!("killed by the harness ({status})"));
        self.note(format!("node {id}: SIGKILL, pid {pid} reaped ({status})"));
        Ok(())
    }

    /// SIGSTOPs node `id`'s agent and waits until the kernel reports it stopped.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let pid = self.live_pid(id)?;
        kill(pid, Signal::SIGSTOP).with_context(|| format!("cannot SIGSTOP node {id}"))?;
        wait_for_process_state(pid, true)
            .with_context(|| format!("node {id} did not stop after SIGSTOP"))?;
        self.node_mut(id)?.paused = true;
        self.note(format!("node {id}: SIGSTOP, pid {pid} stopped"));
        Ok(())
    }

    /// SIGCONTs node `id`'s paused agent.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        ensure!(node.paused, "node {id} is not paused");
        let pid = node
            .pid()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        kill(pid, Signal::SIGCONT).with_context(|| format!("cannot SIGCONT node {id}"))?;
        wait_for_process_state(pid, false)
            .with_context(|| format!("node {id} did not continue after SIGCONT"))?;
        self.node_mut(id)?.paused = false;
        self.note(format!("node {id}: SIGCONT, pid {pid} running"));
        Ok(())
    }

    /// SIGTERMs node `id`'s agent and waits up to `timeout` for it to exit (polling every
    /// 2 ms). If it does not, it is SIGKILLed and this fails.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Result<Exit> {
        let pid = self.live_pid(id)?;
        let sent = Instant::now();
        kill(pid, Signal::SIGTERM).with_context(|| format!("cannot SIGTERM node {id}"))?;
        self.note(format!("node {id}: SIGTERM to pid {pid}"));
        let deadline = sent + timeout;
        let rounds = timeout.as_millis() / 2 + 2;
        let node = self.node_mut(id)?;
        let child = node
            .process
            .as_mut()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        for _ in 0..rounds {
            if let Some(status) = child.try_wait()? {
                let at = Instant::now();
                node.process = None;
                node.last_exit = Some(format!("exited after SIGTERM ({status})"));
                let exit = Exit {
                    status,
                    at,
                    after: at - sent,
                };
                self.note(format!(
                    "node {id}: exited {} ms after SIGTERM ({status})",
                    exit.after.as_millis()
                ));
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let diagnosis = self.diagnose(&format!(
            "node {id} did not exit within {} ms of SIGTERM; killing it",
            timeout.as_millis()
        ));
        self.kill(id)?;
        bail!(diagnosis)
    }

    /// Kills node `id`'s agent if it runs, then starts it again (its state directory kept).
    pub fn restart(&mut self, id: u64) -> Result<()> {
        self.reap(id)?;
        if self.node(id)?.process.is_some() {
            self.kill(id)?;
        }
        self.start(id)
    }

    /// Whether node `id`'s agent runs (paused counts as running).
    pub fn is_running(&mut self, id: u64) -> Result<bool> {
        self.reap(id)?;
        Ok(self.node(id)?.process.is_some())
    }

    fn live_pid(&mut self, id: u64) -> Result<Pid> {
        self.ensure_live(&[id])?;
        self.node(id)?
            .pid()
            .ok_or_else(|| anyhow!("node {id} has no valid pid"))
    }

    /// If node `id`'s agent has exited on its own, records how and forgets the process.
    fn reap(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if let Some(child) = node.process.as_mut() {
            if let Some(status) = child.try_wait()? {
                node.process = None;
                node.paused = false;
                node.last_exit = Some(format!("exited on its own ({status})"));
                self.note(format!("node {id}: found exited on its own ({status})"));
            }
        }
        Ok(())
    }

    /// Fails, with diagnostics, unless every node in `ids` runs and is not paused.
    fn ensure_live(&mut self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            self.reap(id)?;
            let node = self.node(id)?;
            let problem = if node.process.is_none() {
                Some(match &node.last_exit {
                    Some(exit) => format!("node {id} is not running: {exit}"),
                    None => format!("node {id} is not running"),
                })
            } else if node.paused {
                Some(format!("node {id} is paused (SIGSTOP)"))
            } else {
                None
            };
            if let Some(problem) = problem {
                bail!(self.diagnose(&problem));
            }
        }
        Ok(())
    }

    // ---- faults in the network --------------------------------------------------------------

    /// Cuts node `id` off from every other node, both ways (nftables DROP in its namespace).
    pub fn isolate(&mut self, id: u64) -> Result<()> {
        self.network.isolate(id)?;
        self.note(format!("node {id}: isolated from {:?}", self.others(id)));
        Ok(())
    }

    /// Drops traffic between node `id` and `peers` in one direction or both.
    pub fn cut(&mut self, id: u64, direction: Direction, peers: &[u64]) -> Result<()> {
        self.network.cut(id, direction, peers)?;
        self.note(format!("node {id}: cut {direction:?} from {peers:?}"));
        Ok(())
    }

    /// Removes node `id`'s DROP rules.
    pub fn heal(&mut self, id: u64) -> Result<()> {
        self.network.heal(id)?;
        self.note(format!("node {id}: healed"));
        Ok(())
    }

    // ---- status -----------------------------------------------------------------------------

    /// `ha-agent status --json --socket S` for node `id`, parsed.
    pub fn status(&self, id: u64) -> Result<Status> {
        let stdout = self.run_status(id, true)?;
        let status = Status::parse(&stdout).with_context(|| {
            format!("node {id}: cannot parse `ha-agent status --json` output: {stdout}")
        })?;
        ensure!(
            status.node_id == id,
            "the status socket of node {id} answered for node {}",
            status.node_id
        );
        Ok(status)
    }

    /// `ha-agent status --socket S` for node `id`: the human-readable text.
    pub fn status_text(&self, id: u64) -> Result<String> {
        self.run_status(id, false)
    }

    fn run_status(&self, id: u64, json: bool) -> Result<String> {
        let node = self.node(id)?;
        let mut command = Command::new(&self.binary);
        command.arg("status");
        if json {
            command.arg("--json");
        }
        command.arg("--socket").arg(&node.socket);
        let output = command::run(&mut command, None, STATUS_TIMEOUT)
            .with_context(|| format!("node {id}: `ha-agent status` failed"))?;
        if !output.status.success() {
            bail!(
                "node {id}: `ha-agent status` exited with {}: {}",
                output.status,
                output.stderr.trim()
            );
        }
        Ok(output.stdout)
    }

    /// Statuses of `ids`; `Err(reason)` if any cannot be had. Fails if a node is not live.
    fn statuses(&mut self, ids: &[u64]) -> Result<std::result::Result<Vec<Status>, String>> {
        self.ensure_live(ids)?;
        let mut statuses = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.status(id) {
                Ok(status) => statuses.push(status),
                Err(error) => return Ok(Err(format!("{error:#}"))),
            }
        }
        Ok(Ok(statuses))
    }

    // ---- waits ------------------------------------------------------------------------------

    /// Polls until the nodes `among` (all running, none paused) agree on a single leader:
    /// exactly one reports role leader, and every one reports it as leader_id, in the same
    /// term. Fails at once if one of them exits or two claim the same term.
    pub fn wait_for_single_leader(&mut self, among: &[u64], timeout: Duration) -> Result<Leader> {
        self.wait_for_single_leader_every(among, timeout, DEFAULT_POLL_INTERVAL)
    }

    /// [`Cluster::wait_for_single_leader`] polling every `interval`.
    pub fn wait_for_single_leader_every(
        &mut self,
        among: &[u64],
        timeout: Duration,
        interval: Duration,
    ) -> Result<Leader> {
        ensure!(!among.is_empty(), "wait for a leader among no nodes");
        let what = format!("a single leader among nodes {among:?}");
        let leader = self.poll(&what, timeout, interval, |cluster| {
            Ok(cluster.agreed_leader(among)?.map(|(leader, _)| leader))
        })?;
        self.note(format!("nodes {among:?} agree: leader {leader}"));
        Ok(leader)
    }

    /// One observation of the nodes `among`: the leader they agree on and their statuses, or
    /// `Ok(Err(reason))` while they do not agree. Fails at once if two claim the same term.
    fn agreed_leader(
        &mut self,
        among: &[u64],
    ) -> Result<std::result::Result<(Leader, Vec<Status>), String>> {
        let statuses = match self.statuses(among)? {
            Ok(statuses) => statuses,
            Err(reason) => return Ok(Err(reason)),
        };
        match judge(&statuses) {
            Verdict::Agreed(leader) => Ok(Ok((leader, statuses))),
            Verdict::Pending(reason) => Ok(Err(reason)),
            Verdict::Violation(reason) => {
                bail!(self.diagnose(&format!("election safety violated: {reason}")))
            }
        }
    }

    /// Polls until node `id` no longer reports role leader; returns that status.
    pub fn wait_until_not_leader(&mut self, id: u64, timeout: Duration) -> Result<Status> {
        let what = format!("node {id} to stop reporting role leader");
        let status = self.poll(&what, timeout, DEFAULT_POLL_INTERVAL, |cluster| {
            cluster.ensure_live(&[id])?;
            Ok(match cluster.status(id) {
                Ok(status) if status.role != Role::Leader => Ok(status),
                Ok(status) => Err(status.to_string()),
                Err(error) => Err(format!("{error:#}")),
            })
        })?;
        self.note(format!("{status}"));
        Ok(status)
    }

    /// Polls until node `id` reports role follower with leader_id `leader`.
    pub fn wait_for_follower_of(
        &mut self,
        id: u64,
        leader: u64,
        timeout: Duration,
    ) -> Result<Status> {
        let what = format!("node {id} to follow node {leader}");
        let status = self.poll(&what, timeout, DEFAULT_POLL_INTERVAL, |cluster| {
            cluster.ensure_live(&[id])?;
            Ok(match cluster.status(id) {
                Ok(status) if status.role == Role::Follower && status.leader_id == Some(leader) => {
                    Ok(status)
                }
                Ok(status) => Err(status.to_string()),
                Err(error) => Err(format!("{error:#}")),
            })
        })?;
        self.note(format!("{status}"));
        Ok(status)
    }

    /// Samples the statuses of `among` every 100 ms for `duration`; fails at the first sample
    /// in which they do not all agree on `expected` (same leader, same term).
    pub fn assert_leader_stable(
        &mut self,
        among: &[u64],
        expected: Leader,
        duration: Duration,
    ) -> Result<()> {
        let interval = Duration::from_millis(100);
        let end = Instant::now() + duration;
        let rounds = duration.as_millis() / interval.as_millis() + 2;
        for _ in 0..rounds {
            let verdict = match self.statuses(among)? {
                Ok(statuses) => judge(&statuses),
                Err(reason) => Verdict::Pending(reason),
            };
            if verdict != Verdict::Agreed(expected) {
                let reason = match verdict {
                    Verdict::Agreed(other) => format!("leadership moved to {other}"),
                    Verdict::Pending(reason) | Verdict::Violation(reason) => reason,
                };
                bail!(self.diagnose(&format!(
                    "nodes {among:?} should have kept leader {expected}: {reason}"
                )));
            }
            if Instant::now() >= end {
                break;
            }
            thread::sleep(interval);
        }
        self.note(format!(
            "nodes {among:?} kept leader {expected} for {} ms",
            duration.as_millis()
        ));
        Ok(())
    }

    // ---- the floating resources, observed through the emulator ------------------------------

    /// When the cluster was created, in seconds since the epoch (the claims' time base).
    pub fn created_wall_clock(&self) -> f64 {
        self.created_wall
    }

    /// Fails, with diagnostics, if the fault proxy or the emulator has exited.
    fn ensure_helpers_alive(&mut self) -> Result<()> {
        if let Some(problem) = self.aws.as_ref().and_then(AwsWorld::helpers_exited) {
            bail!(self.diagnose(&problem));
        }
        Ok(())
    }

    /// Polls the emulator until every resource points at node `id` (and the leader parameter
    /// names `term`, if given).
    pub fn wait_for_resources_on(
        &mut self,
        id: u64,
        term: Option<u64>,
        timeout: Duration,
    ) -> Result<Holders> {
        self.aws()?;
        let what = match term {
            Some(term) => format!("every resource to point at node {id} in term {term}"),
            None => format!("every resource to point at node {id}"),
        };
        let holders = self.poll(&what, timeout, RESOURCE_POLL_INTERVAL, |cluster| {
            cluster.resources_on(id, term)
        })?;
        self.note(format!("emulator: {holders}"));
        Ok(holders)
    }

    /// One observation of the emulator: where every resource points, if at node `id` (and
    /// the leader parameter names `term`, if given), else `Ok(Err(what it saw))`.
    fn resources_on(
        &mut self,
        id: u64,
        term: Option<u64>,
    ) -> Result<std::result::Result<Holders, String>> {
        self.ensure_helpers_alive()?;
        Ok(match self.aws()?.holders() {
            Ok(holders) if holders.all_on(id, term) => Ok(holders),
            Ok(holders) => Err(holders.to_string()),
            Err(error) => Err(format!("{error:#}")),
        })
    }

    /// Polls until the nodes `among` agree on a single leader that reports itself healthy
    /// (`"healthy": true` in its status; the caller knows a healthy node exists) and every
    /// resource points at it in its term, all in one observation. Fails at once on two
    /// leaders in one term.
    pub fn wait_for_healthy_leader_with_resources(
        &mut self,
        among: &[u64],
        timeout: Duration,
    ) -> Result<Leader> {
        self.aws()?;
        let what =
            format!("a single healthy leader among nodes {among:?} with every resource on it");
        let leader = self.poll(&what, timeout, RESOURCE_POLL_INTERVAL, |cluster| {
            let (leader, statuses) = match cluster.agreed_leader(among)? {
                Ok(agreed) => agreed,
                Err(reason) => return Ok(Err(reason)),
            };
            let healthy = statuses
                .iter()
                .find(|status| status.node_id == leader.id)
                .and_then(|status| serde_json::from_str::<serde_json::Value>(&status.raw).ok())
                .and_then(|value| value["healthy"].as_bool());
            if healthy != Some(true) {
                return Ok(Err(format!(
                    "leader {leader} reports healthy = {healthy:?}"
                )));
            }
            Ok(cluster
                .resources_on(leader.id, Some(leader.term))?
                .map(|_| leader)
                .map_err(|seen| format!("leader {leader}; {seen}")))
        })?;
        self.note(format!("healthy leader {leader}, every resource on it"));
        Ok(leader)
    }

    /// Polls node `id`'s `ha-agent status --json` until it lists resources, every one in place
    /// (the agent's own view, which follows the emulator's after its next observation).
    pub fn wait_for_status_in_place(&mut self, id: u64, timeout: Duration) -> Result<Status> {
        let what = format!("node {id} to report every resource in place");
        let status = self.poll(&what, timeout, DEFAULT_POLL_INTERVAL, |cluster| {
            cluster.ensure_live(&[id])?;
            Ok(match cluster.status(id) {
                Ok(status)
                    if !status.resources.is_empty()
                        && status.resources.iter().all(|r| r.in_place == Some(true)) =>
                {
                    Ok(status)
                }
                Ok(status) => Err(status.raw),
                Err(error) => Err(format!("{error:#}")),
            })
        })?;
        self.note(format!("node {id}: reports every resource in place"));
        Ok(status)
    }

    /// Asks the emulator who holds the Elastic IP (DescribeAddresses) every `interval`, on a
    /// fixed schedule, until a node other than `from` does; returns that node.
    pub fn wait_for_elastic_ip_to_leave(
        &mut self,
        from: u64,
        timeout: Duration,
        interval: Duration,
    ) -> Result<u64> {
        self.aws()?;
        let start = Instant::now();
        let deadline = start + timeout;
        let interval = interval.max(Duration::from_millis(1));
        let rounds = timeout.as_millis() / interval.as_millis() + 2;
        let mut next = start;
        let mut last = String::from("no observation");
        for _ in 0..rounds {
            match self.aws()?.elastic_ip_holder() {
                Ok(Holder::Node(id)) if id != from => {
                    self.note(format!(
                        "emulator: the Elastic IP left node {from} for node {id} ({} ms into the wait)",
                        start.elapsed().as_millis()
                    ));
                    return Ok(id);
                }
                Ok(holder) => last = holder.to_string(),
                Err(error) => last = format!("{error:#}"),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            next += interval;
            if next > now {
                thread::sleep(next.min(deadline) - now);
            } else {
                next = now;
            }
        }
        self.ensure_helpers_alive()?;
        bail!(self.diagnose(&format!(
            "timed out after {} ms waiting for the Elastic IP to leave node {from}; last \
             observation: {last}",
            start.elapsed().as_millis()
        )))
    }

    /// Samples the emulator every 100 ms for `duration`: fails at the first sample in which
    /// the holders differ from the first one or do not all point at `holder`, and if the
    /// fault proxy recorded any claim meanwhile.
    pub fn assert_resources_stable(&mut self, holder: u64, duration: Duration) -> Result<()> {
        let claims_before = self.aws()?.claims()?.len();
        let expected = self.aws()?.holders()?;
        if !expected.all_on(holder, None) {
            bail!(self.diagnose(&format!(
                "every resource should point at node {holder}: {expected}"
            )));
        }
        let interval = Duration::from_millis(100);
        let end = Instant::now() + duration;
        let rounds = duration.as_millis() / interval.as_millis() + 2;
        for _ in 0..rounds {
            self.ensure_helpers_alive()?;
            let now = self.aws()?.holders()?;
            if now != expected {
                bail!(self.diagnose(&format!("the resources moved: {expected} became {now}")));
            }
            if Instant::now() >= end {
                break;
            }
            thread::sleep(interval);
        }
        let claims = self.aws()?.claims()?;
        if claims.len() != claims_before {
            let world = self.aws()?;
            let new = world.describe_claims(
                &claims[claims_before.min(claims.len())..],
                self.created_wall,
            );
            bail!(self.diagnose(&format!(
                "the resources stayed on node {holder}, but claims were made meanwhile \
                 (ms since the cluster was created):\n{new}"
            )));
        }
        self.note(format!(
            "emulator: resources stayed on node {holder} for {} ms, no claim",
            duration.as_millis()
        ));
        Ok(())
    }

    /// Calls `probe` every `interval` until it returns `Ok(Ok(value))`, for at most `timeout`
    /// (and a matching number of rounds). `Ok(Err(reason))` means "not yet"; `Err` fails at
    /// once. On timeout the error holds the last reason and the full diagnostics.
    fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut probe: impl FnMut(&mut Cluster) -> Result<std::result::Result<T, String>>,
    ) -> Result<T> {
        let start = Instant::now();
        let deadline = start + timeout;
        let interval = interval.max(Duration::from_millis(1));
        let rounds = timeout.as_millis() / interval.as_millis() + 2;
        let mut last = String::from("no observation");
        for _ in 0..rounds {
            match probe(self)? {
                Ok(value) => return Ok(value),
                Err(reason) => last = reason,
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            thread::sleep(interval.min(deadline - now));
        }
        bail!(self.diagnose(&format!(
            "timed out after {} ms waiting for {what}; last observation: {last}",
            start.elapsed().as_millis()
        )))
    }

    // ---- diagnostics ------------------------------------------------------------------------

    /// Records a harness event: in memory for failure messages, and in `harness.log`.
    pub fn note(&mut self, event: impl AsRef<str>) {
        let line = format!(
            "[{:8.3} s] {}",
            self.created.elapsed().as_secs_f64(),
            event.as_ref()
        );
        if let Ok(mut file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("harness.log"))
        {
            let _ = writeln!(file, "{line}");
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(line);
    }

    /// `headline`, then each node's process state, current status and log tail, and the
    /// harness's recent events.
    pub fn diagnose(&mut self, headline: &str) -> String {
        let mut text = format!(
            "{headline}\n\ntest {}, directory {} (kept)\n",
            self.test_name,
            self.dir.display()
        );
        for id in self.ids() {
            let _ = self.reap(id);
            let Ok(node) = self.node(id) else { continue };
            let state = match (&node.process, node.paused) {
                (Some(child), false) => format!("running, pid {}", child.id()),
                (Some(child), true) => format!("paused (SIGSTOP), pid {}", child.id()),
                (None, _) => node
                    .last_exit
                    .clone()
                    .unwrap_or_else(|| "not started".to_string()),
            };
            let status = if node.process.is_some() && !node.paused {
                match self.status(id) {
                    Ok(status) => status.raw,
                    Err(error) => format!("(no status: {error:#})"),
                }
            } else {
                "(not queried)".to_string()
            };
            let _ = write!(
                text,
                "\n--- node {id}: {state}\n    status: {status}\n    log {} (last {LOG_TAIL_LINES} lines):\n{}\n",
                node.log.display(),
                indent(&tail(&node.log, LOG_TAIL_LINES))
            );
        }
        if let Some(world) = &self.aws {
            let (proxy_log, emulator_log) = world.logs();
            let helpers = world
                .helpers_exited()
                .unwrap_or_else(|| "fault proxy and emulator running".to_string());
            let holders = match world.holders() {
                Ok(holders) => holders.to_string(),
                Err(error) => format!("(cannot observe: {error:#})"),
            };
            let claims = match world.claims() {
                Ok(claims) => {
                    let first = claims.len().saturating_sub(CLAIMS_QUOTED);
                    world.describe_claims(&claims[first..], self.created_wall)
                }
                Err(error) => format!("    (cannot read the claim log: {error:#})"),
            };
            let _ = write!(
                text,
                "\n--- AWS: {helpers}; fault proxy {} (log {}), emulator {} (log {})\n    \
                 observed in the emulator: {holders}\n    claims recorded by the fault proxy \
                 (last {CLAIMS_QUOTED}; ms since the cluster was created):\n{claims}\n",
                world.agent_endpoint(),
                proxy_log.display(),
                world.emulator().endpoint(),
                emulator_log.display()
            );
        }
        let _ = write!(
            text,
            "\n--- harness events (last {EVENTS_KEPT}):\n{}\n",
            indent(&self.events.iter().cloned().collect::<Vec<_>>().join("\n"))
        );
        text
    }

    /// Ends a test that passed: fails (with diagnostics) if an agent that should be running
    /// has exited on its own, else marks the run passed, so that dropping it deletes its
    /// directory. Agents are then SIGKILLed and the network removed.
    pub fn finish(mut self) -> Result<()> {
        for id in self.ids() {
            self.reap(id)?;
            let node = self.node(id)?;
            if node.process.is_none() {
                if let Some(exit) = node.last_exit.clone() {
                    if exit.starts_with("exited on its own") {
                        bail!(self.diagnose(&format!("node {id} {exit}")));
                    }
                }
            }
        }
        self.ensure_helpers_alive()?;
        self.passed = true;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.process.take() {
                let _ = child.kill();
                let _ = wait_with_timeout(&mut child, Duration::from_secs(10));
            }
        }
        if self.passed && !thread::panicking() {
            if let Err(error) = fs::remove_dir_all(&self.dir) {
                eprintln!("harness: cannot remove {}: {error}", self.dir.display());
            }
        } else {
            eprintln!(
                "harness: test {} did not pass; its configs, state and logs are kept in {}",
                self.test_name,
                self.dir.display()
            );
        }
        // `self.network` is dropped next: namespaces, veths and bridge are removed.
    }
}

/// Creates `<tmp>/ha-e2e-<tag>-<test name, shortened>`, unique even if an earlier process
/// with the same pid kept its directory.
fn create_run_dir(test_name: &str, tag: &str) -> Result<PathBuf> {
    let short: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    let base = std::env::temp_dir().join(format!("ha-e2e-{tag}-{short}"));
    for attempt in 0..100 {
        let dir = if attempt == 0 {
            base.clone()
        } else {
            PathBuf::from(format!("{}.{attempt}", base.display()))
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot create {}", dir.display()))
            }
        }
    }
    bail!("cannot find a free directory name like {}", base.display())
}

/// Writes 32 random bytes, hex-encoded, readable by the owner only (mode 0600).
fn write_secret(path: &Path) -> Result<()> {
    let mut random = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(hex.as_bytes())?;
    Ok(())
}

/// A TOML basic string (JSON string escapes are valid TOML).
fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (at most 2 s) until /proc says the process is stopped (`T`) or no longer stopped.
fn wait_for_process_state(pid: Pid, stopped: bool) -> Result<()> {
    let path = format!("/proc/{pid}/stat");
    for _ in 0..400 {
        let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        if (state == "T") == stopped {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(5));
    }
    bail!(
        "process {pid} did not become {} within 2 s",
        if stopped { "stopped" } else { "runnable" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_quoted_and_escaped() {
        assert_eq!(toml_string("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
