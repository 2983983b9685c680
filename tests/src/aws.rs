//! The AWS side of the end-to-end tests: the emulator (moto), one fault proxy per cluster, and
//! the "world" a cluster lives in, built and observed through the real AWS SDK.
//!
//! ```text
//! test process ──SDK──────────────────────────────► moto 127.0.0.1:M   (one per test process)
//!   (builds the world, observes holders)                 ▲
//!                                                        │ forwards
//! agents in netns ──► fault proxy 10.77.S.1:P ───────────┘   (one per cluster; records claims,
//!                                                              injects 503s and throttling)
//! ```
//!
//! - [`Emulator`]: one moto server per test process, started on first use, on 127.0.0.1 at a
//!   port the kernel picks. The tests of one binary run in parallel and share it; they never
//!   reset it. Each cluster builds its own VPC, subnet, instances, Elastic IP, hosted zone and
//!   parameter names, so tests cannot see one another's resources and none can clear what
//!   another is using. The emulator ends with the test process: it exits when the pipe to its
//!   standard input closes.
//! - [`FaultProxy`]: `tests/aws/fault_proxy.py`, listening on the cluster's bridge address (the
//!   one address of the host that the agents' namespaces can reach). It records every claim
//!   (AssociateAddress, ChangeResourceRecordSets, PutParameter) with arrival and answer times and
//!   the client address, and injects faults on command.
//! - [`AwsWorld`]: what a user's Terraform would create, and the observer: who holds the
//!   Elastic IP (DescribeAddresses → interface → node), what the record says
//!   (ListResourceRecordSets), what the leader parameter says (GetParameter) — always asked of
//!   moto directly, never of the agents, and never through the proxy (no faults, no records).
//!
//! Nothing here may reach real AWS. The SDK clients are built with the emulator's loopback
//! endpoint and static test credentials; the agents' configs name the proxy, and the harness
//! refuses to start an agent whose `aws.endpoint-url` is missing or not local
//! ([`check_endpoint`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types::{DomainType, InstanceType, ResourceType, Tag, TagSpecification};
use aws_sdk_route53::types::RrType;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Deserialize;

use crate::command::{self, wait_with_timeout};
use crate::network::Network;
use crate::system::tail;

/// The region every test world lives in.
pub const REGION: &str = "us-east-1";
/// Static credentials for the emulator (moto accepts any); also given to the agents.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
/// How long the emulator and a proxy may take to come up (moto imports slowly on a busy box).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The deadline of one SDK call of the harness to the emulator.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Any AMI id does for moto.
const IMAGE_ID: &str = "ami-12c6146b";

// ---- where moto is ------------------------------------------------------------------------------

/// The Python interpreter of the environment that has `moto[server]`: from `HA_AGENT_MOTO`
/// (a virtualenv directory, or the `moto_server` script inside one), else the virtualenv that
/// `scripts/setup` creates, `${HA_AGENT_CACHE:-/var/cache/ha-agent}/venv`.
pub fn moto_python() -> Result<PathBuf> {
    let (bin, source) = match std::env::var_os("HA_AGENT_MOTO") {
        Some(value) => {
            let path = PathBuf::from(value);
            let bin = if path.is_dir() {
                path.join("bin")
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            (bin, format!("HA_AGENT_MOTO={}", path.display()))
        }
        None => {
            let cache = std::env::var_os("HA_AGENT_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/ha-agent"));
            let venv = cache.join("venv");
            (
                venv.join("bin"),
                format!("the virtualenv {}", venv.display()),
            )
        }
    };
    let python = bin.join("python3");
    let server = bin.join("moto_server");
    if !python.is_file() || !server.is_file() {
        bail!(
            "moto (the AWS emulator) is not installed: {source} has no {} and {}; run \
             `bash scripts/setup` (as root), which creates that virtualenv and installs \
             moto[server] into it, or set HA_AGENT_MOTO to a virtualenv that has moto[server] \
             (or to its moto_server)",
            python.display(),
            server.display()
        );
    }
    Ok(python)
}

/// A script of `tests/aws/`.
fn script(name: &str) -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("aws").join(name);
    ensure!(
        path.is_file(),
        "{} is missing: the harness runs it from the source tree",
        path.display()
    );
    Ok(path)
}

/// Seconds since the Unix epoch: the time base of the proxy's claim records.
pub fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

// ---- the endpoint rule --------------------------------------------------------------------------

/// Fails unless `url` is an `http://` or `https://` URL whose host is a loopback address or
/// `bridge` (the cluster's own bridge address). This is what stands between a test and real
/// AWS: the harness checks every agent's `aws.endpoint-url` (and `aws.imds-endpoint`, if set)
/// with it before starting the agent.
pub fn check_endpoint(key: &str, url: &str, bridge: Option<Ipv4Addr>) -> Result<()> {
    let refuse = |why: &str| {
        anyhow!(
            "{key} = {url:?} {why}: the harness only lets agents talk to the emulator on \
             loopback or on the cluster's bridge address{}",
            bridge.map(|b| format!(" ({b})")).unwrap_or_default()
        )
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| refuse("is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse("carries user information"));
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    let local = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || bridge.is_some_and(|b| ip == std::net::IpAddr::V4(b)),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if !local {
        return Err(refuse("is not local"));
    }
    Ok(())
}

/// Applies [`check_endpoint`] to the config an agent is about to start with: `aws.endpoint-url`
/// must be present and local, `aws.imds-endpoint` local if present.
pub fn check_agent_config(text: &str, bridge: Ipv4Addr) -> Result<()> {
    let document: toml::Table = toml::from_str(text).context("cannot parse the agent's config")?;
    let aws = document.get("aws").and_then(toml::Value::as_table);
    let endpoint = aws
        .and_then(|aws| aws.get("endpoint-url"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| {
            anyhow!(
                "the config has no aws.endpoint-url: the harness never starts an agent that \
                 could call real AWS"
            )
        })?;
    check_endpoint("aws.endpoint-url", endpoint, Some(bridge))?;
    if let Some(imds) = aws
        .and_then(|aws| aws.get("imds-endpoint"))
        .and_then(toml::Value::as_str)
    {
        check_endpoint("aws.imds-endpoint", imds, Some(bridge))?;
    }
    Ok(())
}

/// Removes every `AWS_*` variable from `command`'s environment and gives it the emulator's
/// static credentials, with IMDS disabled for the SDK's credential and region chains.
pub fn set_agent_environment(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

// ---- helper processes ---------------------------------------------------------------------------

/// A helper process that announces its address on its first stdout line and lives until the
/// pipe to its stdin closes.
struct Helper {
    process: Child,
    /// Holding this keeps the helper alive; dropping it (or this process ending) stops it.
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Helper {
    /// Starts `command` (stdout piped, stderr to `log`) and waits for its first stdout line,
    /// which must start with `prefix`; returns the rest of the line.
    fn start(
        mut command: Command,
        what: &str,
        prefix: &str,
        log: &Path,
    ) -> Result<(Helper, String)> {
        let description = command::describe(&command);
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {what}: `{description}`"))?;
        let lifeline = process.stdin.take();
        let stdout = process.stdout.take();
        let mut helper = Helper {
            process,
            lifeline,
            log: log.to_path_buf(),
        };
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(START_TIMEOUT).unwrap_or_default();
        match line.trim().strip_prefix(prefix) {
            Some(rest) => Ok((helper, rest.trim().to_string())),
            None => {
                helper.stop();
                bail!(
                    "{what} did not come up within {} s (`{description}`; first line {:?}); its log {}:\n{}",
                    START_TIMEOUT.as_secs(),
                    line.trim(),
                    log.display(),
                    tail(log, 30)
                )
            }
        }
    }

    /// `None` while it runs, else how it ended.
    fn exited(&mut self) -> Option<String> {
        match self.process.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(error) => Some(format!("cannot tell: {error}")),
        }
    }

    fn stop(&mut self) {
        self.lifeline = None;
        let _ = self.process.kill();
        let _ = wait_with_timeout(&mut self.process, Duration::from_secs(10));
    }
}

/// The AWS emulator: one moto server per test process. See the module docs.
pub struct Emulator {
    port: u16,
    python: PathBuf,
    helper: Mutex<Helper>,
}

static EMULATOR: Mutex<Option<Arc<Emulator>>> = Mutex::new(None);

impl Emulator {
    /// The process's emulator, started on first use (and again if it died).
    pub fn shared() -> Result<Arc<Emulator>> {
        let mut slot = EMULATOR
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(emulator) = slot.as_ref() {
            if emulator.exited().is_none() {
                return Ok(Arc::clone(emulator));
            }
        }
        let emulator = Arc::new(Emulator::start()?);
        *slot = Some(Arc::clone(&emulator));
        Ok(emulator)
    }

    fn start() -> Result<Emulator> {
        let python = moto_python()?;
        let log = std::env::temp_dir().join(format!("ha-e2e-moto-{}.log", std::process::id()));
        let mut command = Command::new(&python);
        command
            .arg(script("emulator.py")?)
            .args(["--host", "127.0.0.1", "--log"])
            .arg(&log);
        let (helper, address) = Helper::start(
            command,
            "the AWS emulator (moto)",
            "moto listening on",
            &log,
        )?;
        let port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .ok_or_else(|| {
                anyhow!("the emulator announced an address without a port: {address}")
            })?;
        Ok(Emulator {
            port,
            python,
            helper: Mutex::new(helper),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Python that runs moto (and the fault proxy, which needs only the standard library).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The emulator's log (errors only; removed when the emulator exits, if empty).
    pub fn log(&self) -> PathBuf {
        self.lock().log.clone()
    }

    /// `None` while it runs, else how it ended.
    pub fn exited(&self) -> Option<String> {
        self.lock().exited()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Helper> {
        self.helper
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One cluster's fault proxy (`tests/aws/fault_proxy.py`) on the bridge address. Dropping it
/// stops it.
pub struct FaultProxy {
    endpoint: String,
    helper: Helper,
}

impl FaultProxy {
    /// Starts a proxy on `listen` (a port the kernel picks) in front of `emulator`; its stderr
    /// goes to `log`.
    pub fn start(emulator: &Emulator, listen: Ipv4Addr, log: &Path) -> Result<FaultProxy> {
        let mut command = Command::new(emulator.python());
        command
            .arg(script("fault_proxy.py")?)
            .arg("--listen")
            .arg(format!("{listen}:0"))
            .arg("--upstream")
            .arg(emulator.endpoint())
            .arg("--exit-on-eof");
        let (helper, address) =
            Helper::start(command, "the fault proxy", "proxy listening on", log)?;
        let endpoint = format!("http://{address}");
        check_endpoint("the fault proxy's address", &endpoint, Some(listen))?;
        Ok(FaultProxy { endpoint, helper })
    }

    /// `http://<bridge address>:PORT`: what the agents' `aws.endpoint-url` says.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `None` while it runs, else how it ended.
    pub fn exited(&mut self) -> Option<String> {
        self.helper.exited()
    }

    pub fn log(&self) -> &Path {
        &self.helper.log
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.helper.stop();
    }
}

// ---- the proxy's records ------------------------------------------------------------------------

/// What a claim asked for, as the proxy parsed it (which fields are set depends on the action).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClaimTarget {
    pub allocation_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub private_ip: Option<String>,
    pub instance_id: Option<String>,
    pub zone: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
}

/// One claim as the fault proxy recorded it: AssociateAddress, ChangeResourceRecordSets or
/// PutParameter. Times are seconds since the Unix epoch ([`wall_clock`]).
#[derive(Clone, Debug, Deserialize)]
pub struct Claim {
    pub service: String,
    pub action: String,
    #[serde(default)]
    pub target: ClaimTarget,
    /// The address the request came from: the claiming node's namespace address.
    pub client: String,
    pub arrived: f64,
    pub answered: f64,
    pub status: u16,
    /// `"503"` or `"throttle"` when the proxy answered instead of the emulator.
    pub injected: Option<String>,
}

/// Faults the proxy injects into every request it forwards (claims and observations alike).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of requests answered with HTTP 503.
    pub error_rate: f64,
    /// Share of requests answered with the service's throttling error.
    pub throttle_rate: f64,
    pub delay_ms: u64,
}

// ---- the world ----------------------------------------------------------------------------------

/// One node's EC2 identity in the emulator.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub instance_id: String,
    pub network_interface_id: String,
    pub private_ip: Ipv4Addr,
}

/// Who a resource points at, as the emulator says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Not associated / no record / no parameter.
    Nobody,
    /// One of the cluster's nodes.
    Node(u64),
    /// Something else, described.
    Unknown(String),
}

impl Holder {
    pub fn node(&self) -> Option<u64> {
        match self {
            Holder::Node(id) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Nobody => f.write_str("nobody"),
            Holder::Node(id) => write!(f, "node {id}"),
            Holder::Unknown(what) => write!(f, "unknown ({what})"),
        }
    }
}

/// The three floating resources of a test world, as observed in the emulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holders {
    pub elastic_ip: Holder,
    pub record: Holder,
    pub leader_parameter: Holder,
    /// The term in the leader parameter's document.
    pub leader_parameter_term: Option<u64>,
}

impl Holders {
    /// Whether every resource points at node `id` (and the parameter names `term`, if given).
    pub fn all_on(&self, id: u64, term: Option<u64>) -> bool {
        self.elastic_ip == Holder::Node(id)
            && self.record == Holder::Node(id)
            && self.leader_parameter == Holder::Node(id)
            && term.is_none_or(|term| self.leader_parameter_term == Some(term))
    }
}

impl fmt::Display for Holders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "elastic IP on {}, record on {}, leader parameter names {}",
            self.elastic_ip, self.record, self.leader_parameter
        )?;
        if let Some(term) = self.leader_parameter_term {
            write!(f, " (term {term})")?;
        }
        Ok(())
    }
}

/// The leader document the agents write to the leader parameter (fields the harness reads).
#[derive(Deserialize)]
struct LeaderDocument {
    node_id: u64,
    term: u64,
}

/// A cluster's resources in the emulator, its fault proxy, and the SDK clients that built and
/// observe them. See the module docs.
pub struct AwsWorld {
    /// Dropped first (fields drop in order): the proxy stops before the runtime goes.
    proxy: Mutex<FaultProxy>,
    emulator: Arc<Emulator>,
    runtime: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    route53: aws_sdk_route53::Client,
    ssm: aws_sdk_ssm::Client,
    http: reqwest::Client,
    bridge: Ipv4Addr,
    pub vpc_id: String,
    pub subnet_id: String,
    pub allocation_id: String,
    pub public_ip: String,
    pub zone_id: String,
    pub zone_name: String,
    pub record_name: String,
    pub leader_parameter: String,
    nodes: BTreeMap<u64, NodeIdentity>,
}

impl AwsWorld {
    /// Starts (or joins) the emulator, starts a fault proxy on `network`'s bridge address
    /// (its log in `dir`), and creates in the emulator what the cluster needs: a VPC and subnet
    /// equal to the network's subnet, one instance per node with the node's address as its
    /// private IP, an Elastic IP, a hosted zone; names carry the network's tag, so that parallel
    /// tests never share a resource.
    pub fn create(network: &Network, dir: &Path, cluster_name: &str) -> Result<AwsWorld> {
        let emulator = Emulator::shared()?;
        let bridge = network.host_address();
        let proxy = FaultProxy::start(&emulator, bridge, &dir.join("fault-proxy.log"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the harness's tokio runtime")?;
        let endpoint = emulator.endpoint();
        check_endpoint("the harness's own SDK endpoint", &endpoint, None)?;
        let sdk = runtime.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(&endpoint)
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    ACCESS_KEY_ID,
                    SECRET_ACCESS_KEY,
                    None,
                    None,
                    "ha-agent-e2e",
                ))
                .retry_config(RetryConfig::standard().with_max_attempts(3))
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_timeout(CALL_TIMEOUT)
                        .build(),
                )
                .load(),
        );
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .no_proxy()
            .build()
            .context("cannot build the HTTP client for the fault proxy")?;
        let tag = network.tag().to_ascii_lowercase();
        let zone_name = format!("e2e-{tag}.test.");
        let mut world = AwsWorld {
            proxy: Mutex::new(proxy),
            ec2: aws_sdk_ec2::Client::new(&sdk),
            route53: aws_sdk_route53::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            emulator,
            runtime,
            http,
            bridge,
            vpc_id: String::new(),
            subnet_id: String::new(),
            allocation_id: String::new(),
            public_ip: String::new(),
            zone_id: String::new(),
            record_name: format!("db.{zone_name}"),
            zone_name,
            leader_parameter: format!("/ha-agent/e2e-{tag}/leader"),
            nodes: BTreeMap::new(),
        };
        world
            .build(network, cluster_name)
            .context("cannot create the test's AWS world in the emulator")?;
        Ok(world)
    }

    fn build(&mut self, network: &Network, cluster_name: &str) -> Result<()> {
        let tags = |kind: ResourceType, name: String| {
            TagSpecification::builder()
                .resource_type(kind)
                .tags(Tag::builder().key("Name").value(name).build())
                .tags(
                    Tag::builder()
                        .key("ha-agent-cluster")
                        .value(cluster_name)
                        .build(),
                )
                .build()
        };
        let subnet_cidr = network.subnet();
        let (ec2, route53) = (self.ec2.clone(), self.route53.clone());
        let vpc = self
            .runtime
            .block_on(ec2.create_vpc().cidr_block(&subnet_cidr).send())
            .map_err(|e| sdk_error("CreateVpc", e))?;
        self.vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .context("CreateVpc returned no VPC id")?
            .to_string();
        let subnet = self
            .runtime
            .block_on(
                ec2.create_subnet()
                    .vpc_id(&self.vpc_id)
                    .cidr_block(&subnet_cidr)
                    .availability_zone(format!("{REGION}a"))
                    .send(),
            )
            .map_err(|e| sdk_error("CreateSubnet", e))?;
        self.subnet_id = subnet
            .subnet()
            .and_then(|s| s.subnet_id())
            .context("CreateSubnet returned no subnet id")?
            .to_string();
        for &id in network.node_ids() {
            let address = network.address(id);
            let out = self
                .runtime
                .block_on(
                    ec2.run_instances()
                        .image_id(IMAGE_ID)
                        .instance_type(InstanceType::T3Micro)
                        .min_count(1)
                        .max_count(1)
                        .subnet_id(&self.subnet_id)
                        .private_ip_address(address.to_string())
                        .tag_specifications(tags(ResourceType::Instance, format!("node{id}")))
                        .send(),
                )
                .map_err(|e| sdk_error("RunInstances", e))?;
            let instance = out
                .instances()
                .first()
                .context("RunInstances returned no instance")?;
            let interface = instance
                .network_interfaces()
                .first()
                .context("RunInstances returned an instance without a network interface")?;
            let identity = NodeIdentity {
                instance_id: instance
                    .instance_id()
                    .context("RunInstances returned no instance id")?
                    .to_string(),
                network_interface_id: interface
                    .network_interface_id()
                    .context("RunInstances returned an interface without an id")?
                    .to_string(),
                private_ip: address,
            };
            let private_ip = interface.private_ip_address().unwrap_or_default();
            ensure!(
                private_ip == address.to_string(),
                "the emulator gave node {id}'s instance {} the private IP {private_ip}, not {address}",
                identity.instance_id
            );
            self.nodes.insert(id, identity);
        }
        let eip = self
            .runtime
            .block_on(
                ec2.allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(tags(ResourceType::ElasticIp, "floating".to_string()))
                    .send(),
            )
            .map_err(|e| sdk_error("AllocateAddress", e))?;
        self.allocation_id = eip
            .allocation_id()
            .context("AllocateAddress returned no allocation id")?
            .to_string();
        self.public_ip = eip.public_ip().unwrap_or_default().to_string();
        let zone = self
            .runtime
            .block_on(
                route53
                    .create_hosted_zone()
                    .name(&self.zone_name)
                    .caller_reference(format!("ha-agent-e2e-{}", self.zone_name))
                    .send(),
            )
            .map_err(|e| sdk_error("CreateHostedZone", e))?;
        let zone_id = zone
            .hosted_zone()
            .map(|z| z.id())
            .context("CreateHostedZone returned no zone")?;
        self.zone_id = zone_id.trim_start_matches("/hostedzone/").to_string();
        Ok(())
    }

    // ---- what the agents are told ---------------------------------------------------------------

    /// The fault proxy's endpoint: every agent's `aws.endpoint-url`.
    pub fn agent_endpoint(&self) -> String {
        self.proxy().endpoint().to_string()
    }

    /// The emulator the world lives in.
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// Node `id`'s instance, interface and address.
    pub fn node(&self, id: u64) -> Result<&NodeIdentity> {
        self.nodes
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} has no instance in the AWS world"))
    }

    /// The `[aws]`, `[[elastic-ip]]` and `[[route53-record]]` tables of node `id`'s config:
    /// every identity value overridden (no IMDS), every call sent to the fault proxy, the
    /// agent's defaults otherwise (`aws.reconcile-interval` too, unless `reconcile_interval`).
    pub fn config_tables(&self, id: u64, reconcile_interval: Option<Duration>) -> Result<String> {
        let node = self.node(id)?;
        let reconcile = reconcile_interval
            .map(|interval| format!("reconcile-interval = \"{}ms\"\n", interval.as_millis()))
            .unwrap_or_default();
        Ok(format!(
            "\n[aws]\n\
             region = \"{REGION}\"\n\
             instance-id = \"{instance}\"\n\
             network-interface-id = \"{interface}\"\n\
             private-ip = \"{ip}\"\n\
             endpoint-url = \"{endpoint}\"\n\
             leader-parameter = \"{parameter}\"\n\
             {reconcile}\
             \n[[elastic-ip]]\n\
             allocation-id = \"{allocation}\"\n\
             \n[[route53-record]]\n\
             hosted-zone-id = \"{zone}\"\n\
             name = \"{record}\"\n\
             type = \"A\"\n\
             ttl = 10\n\
             value = \"private-ip\"\n",
            instance = node.instance_id,
            interface = node.network_interface_id,
            ip = node.private_ip,
            endpoint = self.agent_endpoint(),
            parameter = self.leader_parameter,
            allocation = self.allocation_id,
            zone = self.zone_id,
            record = self.record_name,
        ))
    }

    fn node_by_interface(&self, interface: &str, private_ip: &str) -> Holder {
        self.nodes
            .iter()
            .find(|(_, node)| {
                node.network_interface_id == interface && node.private_ip.to_string() == private_ip
            })
            .map_or_else(
                || Holder::Unknown(format!("{interface} {private_ip}")),
                |(&id, _)| Holder::Node(id),
            )
    }

    fn node_by_address(&self, address: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, node)| node.private_ip.to_string() == address)
            .map(|(&id, _)| id)
    }

    // ---- observing, through the emulator's API --------------------------------------------------

    /// Who holds the Elastic IP (DescribeAddresses: its interface and private IP → a node).
    pub fn elastic_ip_holder(&self) -> Result<Holder> {
        let out = self
            .runtime
            .block_on(
                self.ec2
                    .describe_addresses()
                    .allocation_ids(&self.allocation_id)
                    .send(),
            )
            .map_err(|e| sdk_error("DescribeAddresses", e))?;
        let address = out
            .addresses()
            .first()
            .ok_or_else(|| anyhow!("the emulator has no Elastic IP {}", self.allocation_id))?;
        Ok(match address.network_interface_id() {
            None | Some("") => Holder::Nobody,
            Some(interface) => {
                self.node_by_interface(interface, address.private_ip_address().unwrap_or_default())
            }
        })
    }

    /// What the record holds (ListResourceRecordSets: its single value → a node).
    pub fn record_holder(&self) -> Result<Holder> {
        let out = self
            .runtime
            .block_on(
                self.route53
                    .list_resource_record_sets()
                    .hosted_zone_id(&self.zone_id)
                    .send(),
            )
            .map_err(|e| sdk_error("ListResourceRecordSets", e))?;
        let wanted = self.record_name.trim_end_matches('.');
        let set = out.resource_record_sets().iter().find(|set| {
            set.name()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(wanted)
                && *set.r#type() == RrType::A
        });
        let values: Vec<&str> = set
            .map(|set| set.resource_records().iter().map(|r| r.value()).collect())
            .unwrap_or_default();
        Ok(match values.as_slice() {
            [] => Holder::Nobody,
            [value] => self
                .node_by_address(value)
                .map_or_else(|| Holder::Unknown(value.to_string()), Holder::Node),
            several => Holder::Unknown(several.join(", ")),
        })
    }

    /// What the leader parameter says (GetParameter: its JSON's node id and term).
    pub fn leader_parameter_holder(&self) -> Result<(Holder, Option<u64>)> {
        let result = self
            .runtime
            .block_on(self.ssm.get_parameter().name(&self.leader_parameter).send());
        let value = match result {
            Ok(out) => out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                return Ok((Holder::Nobody, None))
            }
            Err(e) => return Err(sdk_error("GetParameter", e)),
        };
        Ok(match serde_json::from_str::<LeaderDocument>(&value) {
            Ok(document) if self.nodes.contains_key(&document.node_id) => {
                (Holder::Node(document.node_id), Some(document.term))
            }
            _ => (Holder::Unknown(value), None),
        })
    }

    /// Disassociates the Elastic IP behind the agents' backs (as an operator or a drifting
    /// Terraform run would), straight in the emulator. Returns whether it was associated.
    pub fn disassociate_elastic_ip(&self) -> Result<bool> {
        let out = self
            .runtime
            .block_on(
                self.ec2
                    .describe_addresses()
                    .allocation_ids(&self.allocation_id)
                    .send(),
            )
            .map_err(|e| sdk_error("DescribeAddresses", e))?;
        let Some(association) = out
            .addresses()
            .first()
            .and_then(|address| address.association_id())
            .filter(|id| !id.is_empty())
        else {
            return Ok(false);
        };
        self.runtime
            .block_on(
                self.ec2
                    .disassociate_address()
                    .association_id(association)
                    .send(),
            )
            .map_err(|e| sdk_error("DisassociateAddress", e))?;
        Ok(true)
    }

    /// All three holders.
    pub fn holders(&self) -> Result<Holders> {
        let (leader_parameter, leader_parameter_term) = self.leader_parameter_holder()?;
        Ok(Holders {
            elastic_ip: self.elastic_ip_holder()?,
            record: self.record_holder()?,
            leader_parameter,
            leader_parameter_term,
        })
    }

    // ---- the fault proxy ------------------------------------------------------------------------

    fn proxy(&self) -> std::sync::MutexGuard<'_, FaultProxy> {
        self.proxy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `None` while the proxy and the emulator run, else which ended and how.
    pub fn helpers_exited(&self) -> Option<String> {
        if let Some(how) = self.proxy().exited() {
            return Some(format!("the fault proxy exited ({how})"));
        }
        self.emulator
            .exited()
            .map(|how| format!("the emulator exited ({how})"))
    }

    /// The fault proxy's log and the emulator's log, for failure messages.
    pub fn logs(&self) -> (PathBuf, PathBuf) {
        (self.proxy().log().to_path_buf(), self.emulator.log())
    }

    fn control(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Result<String> {
        let url = format!("{}/_proxy/{path}", self.agent_endpoint());
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("the fault proxy does not answer {url}"))?;
            let status = response.status();
            let text = response.text().await?;
            ensure!(status.is_success(), "{url} answered {status}: {text}");
            Ok(text)
        })
    }

    /// Every claim the proxy has recorded, in arrival order.
    pub fn claims(&self) -> Result<Vec<Claim>> {
        let text = self.control(reqwest::Method::GET, "claims", None)?;
        let mut claims: Vec<Claim> = serde_json::from_str(&text)
            .with_context(|| format!("cannot parse the proxy's claim log: {text}"))?;
        claims.sort_by(|a, b| a.arrived.total_cmp(&b.arrived));
        Ok(claims)
    }

    /// Sets the faults the proxy injects from now on.
    pub fn set_faults(&self, faults: Faults) -> Result<()> {
        let body = serde_json::json!({
            "error_rate": faults.error_rate,
            "throttle_rate": faults.throttle_rate,
            "delay_ms": faults.delay_ms,
        });
        self.control(reqwest::Method::POST, "faults", Some(body.to_string()))?;
        Ok(())
    }

    /// How many requests the proxy has answered with an injected fault: (503s, throttles).
    pub fn injected_faults(&self) -> Result<(u64, u64)> {
        let text = self.control(reqwest::Method::GET, "stats", None)?;
        let stats: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("cannot parse the proxy's statistics: {text}"))?;
        let count = |key: &str| stats["injected"][key].as_u64().unwrap_or(0);
        Ok((count("503"), count("throttle")))
    }

    /// The node that sent `claim`, by its source address (each namespace has one address).
    pub fn claimer(&self, claim: &Claim) -> Option<u64> {
        self.node_by_address(&claim.client)
    }

    /// The node `claim` asks the resource to point at: by interface (Elastic IP), by value
    /// (record) or by the node id in the leader document (parameter).
    pub fn claimed_for(&self, claim: &Claim) -> Option<u64> {
        match claim.action.as_str() {
            "AssociateAddress" => self
                .node_by_interface(
                    claim
                        .target
                        .network_interface_id
                        .as_deref()
                        .unwrap_or_default(),
                    claim.target.private_ip.as_deref().unwrap_or_default(),
                )
                .node(),
            "ChangeResourceRecordSets" => {
                self.node_by_address(claim.target.value.as_deref().unwrap_or_default())
            }
            "PutParameter" => claim
                .target
                .value
                .as_deref()
                .and_then(|value| serde_json::from_str::<LeaderDocument>(value).ok())
                .map(|document| document.node_id)
                .filter(|id| self.nodes.contains_key(id)),
            _ => None,
        }
    }

    /// Fails unless every claim names its sender as the target (a node only ever claims for
    /// itself) and concerns this world's resources. Returns the claims, each with its node.
    pub fn attribute(&self, claims: &[Claim]) -> Result<Vec<(u64, Claim)>> {
        let mut attributed = Vec::with_capacity(claims.len());
        for claim in claims {
            let sender = self.claimer(claim);
            let target = self.claimed_for(claim);
            let ours = match claim.action.as_str() {
                "AssociateAddress" => {
                    claim.target.allocation_id.as_deref() == Some(self.allocation_id.as_str())
                }
                "ChangeResourceRecordSets" => {
                    claim.target.zone.as_deref() == Some(self.zone_id.as_str())
                }
                "PutParameter" => {
                    claim.target.name.as_deref() == Some(self.leader_parameter.as_str())
                }
                _ => false,
            };
            match (sender, target) {
                (Some(sender), Some(target)) if sender == target && ours => {
                    attributed.push((sender, claim.clone()))
                }
                _ => bail!(
                    "a claim that is not a node claiming this world's resource for itself: \
                     sent by {sender:?}, for {target:?}: {claim:?}"
                ),
            }
        }
        Ok(attributed)
    }

    /// Whether node `id`'s namespace reaches the fault proxy (an HTTP request to its health
    /// endpoint from inside the namespace, with the emulator's Python).
    pub fn proxy_reachable_from(&self, network: &Network, id: u64) -> Result<bool> {
        let url = format!("{}/_proxy/health", self.agent_endpoint());
        let mut command = network.command_in(id, self.emulator.python());
        command.args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()",
            &url,
        ]);
        let output = command::run(&mut command, None, Duration::from_secs(10))?;
        Ok(output.status.success())
    }

    /// The bridge address the proxy listens on.
    pub fn bridge(&self) -> Ipv4Addr {
        self.bridge
    }

    /// One line per claim: arrival and answer in ms relative to `origin` (seconds since the
    /// epoch), the sending node, the action, the status, any injected fault.
    pub fn describe_claims(&self, claims: &[Claim], origin: f64) -> String {
        if claims.is_empty() {
            return "    (none)".to_string();
        }
        claims
            .iter()
            .map(|claim| {
                let sender = self
                    .claimer(claim)
                    .map_or_else(|| claim.client.clone(), |id| format!("node {id}"));
                format!(
                    "    {:+9.0} ms .. {:+9.0} ms  {sender}  {} -> {}{}",
                    (claim.arrived - origin) * 1000.0,
                    (claim.answered - origin) * 1000.0,
                    claim.action,
                    claim.status,
                    claim
                        .injected
                        .as_deref()
                        .map(|i| format!(" (injected {i})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An SDK error with its whole chain, naming the call.
fn sdk_error<E: std::error::Error + 'static>(call: &str, error: E) -> anyhow::Error {
    anyhow!(
        "{call} against the emulator failed: {}",
        DisplayErrorContext(&error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_loopback_or_the_bridge() {
        let bridge = Some(Ipv4Addr::new(10, 77, 3, 1));
        for good in [
            "http://127.0.0.1:5000",
            "http://127.0.0.1",
            "http://127.1.2.3:80/path",
            "http://localhost:5000",
            "http://[::1]:5000",
            "http://10.77.3.1:41234",
            "https://10.77.3.1:443/",
        ] {
            assert!(check_endpoint("k", good, bridge).is_ok(), "{good} refused");
        }
        for bad in [
            "https://ec2.us-east-1.amazonaws.com",
            "http://10.77.4.1:5000",
            "http://10.77.3.11:5000",
            "http://169.254.169.254",
            "http://user@127.0.0.1.evil.example:80",
            "http://127.0.0.1@evil.example",
            "127.0.0.1:5000",
            "ftp://127.0.0.1",
            "",
        ] {
            assert!(check_endpoint("k", bad, bridge).is_err(), "{bad} accepted");
        }
        assert!(check_endpoint("k", "http://10.77.3.1:1", None).is_err());
    }

    #[test]
    fn agent_configs_need_a_local_endpoint() {
        let bridge = Ipv4Addr::new(10, 77, 3, 1);
        let base = "[cluster]\nname = \"e2e\"\n";
        let missing = check_agent_config(base, bridge).unwrap_err();
        assert!(
            format!("{missing:#}").contains("aws.endpoint-url"),
            "{missing:#}"
        );
        let table_without = format!("{base}[aws]\nregion = \"us-east-1\"\n");
        assert!(check_agent_config(&table_without, bridge).is_err());
        let remote = format!("{base}[aws]\nendpoint-url = \"https://ec2.amazonaws.com\"\n");
        assert!(check_agent_config(&remote, bridge).is_err());
        let local = format!("{base}[aws]\nendpoint-url = \"http://10.77.3.1:4000\"\n");
        assert!(check_agent_config(&local, bridge).is_ok());
        let remote_imds = format!("{local}imds-endpoint = \"http://169.254.169.254\"\n");
        assert!(check_agent_config(&remote_imds, bridge).is_err());
    }
}
