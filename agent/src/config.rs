//! The configuration layer: `/etc/ha-agent.toml` in, validated [`Settings`] out.
//!
//! Two layers, kept apart on purpose (design notes §5):
//!
//! - the **file schema** (private serde structs below): strict TOML, kebab-case keys, unknown
//!   keys rejected, every value kept as close to the text as possible (strings for durations and
//!   addresses) so that a bad value becomes a problem that names its key rather than an opaque
//!   deserialisation failure;
//! - the **settings** ([`Settings`] and its parts): typed, defaulted and checked. One function,
//!   `validate`, converts the first into the second; every rule that relates two keys lives
//!   there, and it collects *every* problem it finds so that an operator fixes a file in one
//!   round rather than one error at a time.
//!
//! The rules are not cosmetic. Membership rules (at least three voters, at least two members
//! that may lead, no node listed among its own peers) are what make failover possible at all:
//! two voters cannot fail over, since losing one leaves no majority. The timing rules keep the
//! election timeout several heartbeats long, which the leader's lease (design notes §2) relies
//! on. The secret-file rules keep the key that authenticates peers away from other local users.
//!
//! The AWS rules serve the lease (core crate docs, rule 4): a leader starts no AWS call that
//! could outlast its lease, so one call's deadline plus one heartbeat must fit inside the lease
//! that the cluster timing gives, or the leader could never act at all. Identifiers (instance,
//! interface, allocation and hosted zone ids, SSM parameter names) are checked for shape only:
//! whether they exist is for AWS to say at run time, but a typo caught here costs no failover.

use std::fmt;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use ha_agent_core::MemberRole;

/// Where the daemon and the CLI look for the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ha-agent.toml";
/// Where the daemon serves its status unless `[status] socket` says otherwise.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/ha-agent/status.sock";

const DEFAULT_STATE_DIR: &str = "/var/lib/ha-agent";
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
const MAX_ELECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The election timeout must span at least this many heartbeat intervals.
const MIN_ELECTION_TICKS: u32 = 5;
const DEFAULT_VOTER_PRIORITY: i64 = 100;
const DEFAULT_WITNESS_PRIORITY: i64 = 0;
const MAX_PRIORITY: i64 = 1000;
const MIN_MEMBERS: usize = 3;
const MAX_MEMBERS: usize = 7;
const MIN_LEADERS: usize = 2;
const MAX_CLUSTER_NAME_LEN: usize = 64;
const MIN_SECRET_LEN: usize = 16;
/// A key file larger than this is not a key file; refuse it rather than read it whole.
const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;
/// How to make a good key file, quoted in messages.
const SECRET_RECIPE: &str = "(umask 027; head -c 32 /dev/urandom | base64 > FILE)";
/// How to store a good key in SSM, quoted in messages.
const SSM_SECRET_RECIPE: &str = "aws ssm put-parameter --type SecureString --name PARAMETER \
     --value \"$(head -c 32 /dev/urandom | base64)\"";

/// Where the agent asks for its identity unless `[aws] imds-endpoint` says otherwise.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(500);
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_HAND_OFF_AFTER: Duration = Duration::from_secs(30);
/// `aws.hand-off-after` must span at least this many election timeouts.
const MIN_HAND_OFF_ELECTION_TIMEOUTS: u32 = 2;
const DEFAULT_RECORD_TTL: i64 = 10;
/// Route53's own maximum (two days).
const MAX_RECORD_TTL: i64 = 172_800;
const MAX_RECORD_NAME_LEN: usize = 255;
/// SSM's limits on a parameter name (without the ARN prefix) and on its hierarchy depth.
const MAX_SSM_PARAMETER_LEN: usize = 1011;
const MAX_SSM_PARAMETER_LEVELS: usize = 15;

const DEFAULT_PREEMPT_DELAY: Duration = Duration::from_secs(60);
const DEFAULT_MIN_HAND_OFF_INTERVAL: Duration = Duration::from_secs(30);
/// `cluster.min-hand-off-interval` must span at least this many election timeouts.
const MIN_HAND_OFF_INTERVAL_ELECTION_TIMEOUTS: u32 = 2;
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
/// `rise` and `fall` are at most this.
const MAX_RISE_FALL: u32 = 100;
const MAX_CHECK_NAME_LEN: usize = 64;
const DEFAULT_EXPECT_STATUS: std::ops::RangeInclusive<u16> = 200..=399;
/// The HTTP status codes `expect-status` may name.
const HTTP_STATUS_CODES: std::ops::RangeInclusive<u16> = 100..=599;
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_HOOK_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------------------------

/// The shared key that authenticates peers. `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps key bytes (for tests and tools; the daemon gets its secret from [`Settings::load`]).
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Checks the value of the SecureString named by `cluster.secret-ssm-parameter`, fetched by
    /// the daemon at start, by the rules a key file obeys: surrounding ASCII whitespace trimmed,
    /// at least 16 bytes left. The error names the key and the fix, like a config problem.
    pub fn from_parameter_value(parameter: &str, value: &str) -> Result<Secret, String> {
        let trimmed = value.as_bytes().trim_ascii();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(format!(
                "cluster.secret-ssm-parameter = {parameter:?} holds only {} bytes (ignoring \
                 surrounding whitespace): a key needs at least {MIN_SECRET_LEN}; store one with \
                 `{}`",
                trimmed.len(),
                SSM_SECRET_RECIPE.replace("PARAMETER", parameter)
            ));
        }
        Ok(Secret(trimmed.to_vec()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file these settings came from, as given.
    pub config_path: PathBuf,
    pub cluster: ClusterSettings,
    pub node: NodeSettings,
    /// The other members, in file order.
    pub peers: Vec<PeerSettings>,
    pub status: StatusSettings,
    pub aws: AwsSettings,
    /// The `[[elastic-ip]]` entries, in file order.
    pub elastic_ips: Vec<ElasticIpSettings>,
    /// The `[[route53-record]]` entries, in file order.
    pub route53_records: Vec<Route53RecordSettings>,
    /// The `[[check]]` entries, in file order. None: this node is always healthy.
    pub checks: Vec<CheckSettings>,
    /// `[hooks]`: commands run on role transitions.
    pub hooks: HookSettings,
}

/// `[cluster]`: what every member must agree on.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub name: String,
    /// Where the key that authenticates peers comes from.
    pub secret: SecretSource,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// Whether a recovered, healthy node of higher priority takes leadership back.
    pub preempt: bool,
    /// How long such a node must have been healthy before it takes leadership back.
    pub preempt_delay: Duration,
    /// Least time between two hand-offs one leader starts for health or preemption. Validation
    /// guarantees at least two election timeouts when such hand-offs can happen (this node has
    /// checks, or `preempt` is on) or when the key is given.
    pub min_hand_off_interval: Duration,
}

/// Where the cluster key comes from: exactly one of `cluster.secret-file` and
/// `cluster.secret-ssm-parameter`.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// `secret-file`: read and checked during validation.
    File {
        /// The key file, resolved against the config file's directory if it was relative.
        path: PathBuf,
        /// The key bytes, surrounding ASCII whitespace trimmed.
        secret: Secret,
    },
    /// `secret-ssm-parameter`: a SecureString the daemon fetches at start (it needs
    /// `ssm:GetParameter` and `kms:Decrypt`) and checks with [`Secret::from_parameter_value`].
    Ssm { parameter: String },
}

impl ClusterSettings {
    /// The election timeout in heartbeat ticks (rounded down); validation guarantees at least
    /// five.
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_nanos() / self.heartbeat_interval.as_nanos().max(1);
        usize::try_from(ticks).unwrap_or(usize::MAX)
    }
}

/// `[node]`: this instance.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub id: u64,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub role: MemberRole,
    pub priority: i64,
    /// This node's value for `[[route53-record]]` entries with `value = "node"`, as written.
    /// Validation guarantees it is set when such a record exists, and parses as an IPv4 (IPv6)
    /// address when such a record has type A (AAAA).
    pub record_value: Option<String>,
}

/// One `[[peer]]`: another member of the group.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub id: u64,
    pub address: SocketAddr,
    pub role: MemberRole,
}

/// `[status]`: the local status socket.
#[derive(Clone, Debug)]
pub struct StatusSettings {
    pub socket: PathBuf,
}

/// `[aws]`: this node's identity overrides and how the agent talks to AWS. An identity value
/// left `None` comes from IMDS at start (see [`Settings::needs_imds`]).
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub instance_id: Option<String>,
    /// This node's primary network interface.
    pub network_interface_id: Option<String>,
    /// This node's primary private IPv4 address.
    pub private_ip: Option<Ipv4Addr>,
    /// This node's public IPv4 address, used by records with `value = "public-ip"`.
    pub public_ip: Option<Ipv4Addr>,
    /// The instance metadata service, without a trailing slash.
    pub imds_endpoint: String,
    /// Every AWS call goes here instead of AWS (an emulator); without a trailing slash.
    pub endpoint_url: Option<String>,
    /// The SSM parameter the leader keeps up to date with who holds the resources.
    pub leader_parameter: Option<String>,
    /// Deadline of one AWS call, SDK retries included. Validation guarantees that it plus one
    /// heartbeat interval fits inside the leader's lease when the leader makes AWS calls.
    pub call_timeout: Duration,
    /// How often the leader re-checks each resource that is in place.
    pub reconcile_interval: Duration,
    /// A leader that cannot put its resources in place this long hands leadership to a peer.
    pub hand_off_after: Duration,
}

/// One `[[elastic-ip]]`: an address the leader associates with itself.
#[derive(Clone, Debug)]
pub struct ElasticIpSettings {
    pub allocation_id: String,
    /// `None`: the node's primary network interface.
    pub network_interface_id: Option<String>,
    /// `None`: the node's primary private IP (of the interface used).
    pub private_ip: Option<Ipv4Addr>,
}

/// The record types ha-agent keeps pointed at the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Txt,
}

impl RecordType {
    /// The name Route53 uses: "A", "AAAA", "CNAME" or "TXT".
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
        }
    }

    fn parse(text: &str) -> Option<RecordType> {
        [
            RecordType::A,
            RecordType::Aaaa,
            RecordType::Cname,
            RecordType::Txt,
        ]
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
    }
}

/// What a record points at while a node leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordValue {
    /// The leader's primary private IPv4 address (type A only).
    PrivateIp,
    /// The leader's public IPv4 address (type A only).
    PublicIp,
    /// The leader's own `[node] record-value`.
    Node,
}

impl RecordValue {
    /// The spelling in the file: "private-ip", "public-ip" or "node".
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordValue::PrivateIp => "private-ip",
            RecordValue::PublicIp => "public-ip",
            RecordValue::Node => "node",
        }
    }

    fn parse(text: &str) -> Option<RecordValue> {
        [
            RecordValue::PrivateIp,
            RecordValue::PublicIp,
            RecordValue::Node,
        ]
        .into_iter()
        .find(|value| value.as_str() == text)
    }
}

/// One `[[route53-record]]`: a record the leader UPSERTs to point at itself.
#[derive(Clone, Debug)]
pub struct Route53RecordSettings {
    /// The bare id, without a `/hostedzone/` prefix.
    pub hosted_zone_id: String,
    /// Lower case, with a trailing dot.
    pub name: String,
    pub record_type: RecordType,
    pub ttl: i64,
    pub value: RecordValue,
}

/// One `[[check]]`: a probe of the local service. A node is healthy when all its checks pass.
#[derive(Clone, Debug)]
pub struct CheckSettings {
    /// Unique among this node's checks; letters, digits, '.', '_' and '-', at most 64.
    pub name: String,
    pub kind: CheckKind,
    /// Time between the starts of two probes; at least 100ms.
    pub interval: Duration,
    /// A probe that has not passed by then fails; non-zero and shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive passes that make a failing check pass (1 to 100).
    pub rise: u32,
    /// Consecutive failures that make a passing check fail (1 to 100).
    pub fall: u32,
}

/// What a check probes, by its `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `type = "http"`: GET `url`; passes on a status in `expect_status` and, if `body` is set,
    /// a response body that contains it.
    Http {
        /// As written; an `http://` or `https://` URL with a host.
        url: String,
        expect_status: std::ops::RangeInclusive<u16>,
        body: Option<String>,
    },
    /// `type = "tcp"`: passes when a TCP connection to `address` opens.
    Tcp {
        /// "host:port" as written: an ip:port, or a host name and a port.
        address: String,
    },
    /// `type = "exec"`: runs `command` (no shell); passes on exit status 0.
    Exec {
        /// Non-empty; `command[0]` is an absolute path.
        command: Vec<String>,
    },
}

impl CheckKind {
    /// The spelling of `type` in the file: "http", "tcp" or "exec".
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// `[hooks]`: commands (argv, no shell; `argv[0]` absolute) run on role transitions.
#[derive(Clone, Debug)]
pub struct HookSettings {
    /// Run after this node has become leader and claimed the resources.
    pub on_leader: Option<Vec<String>>,
    /// Run when this node becomes a follower.
    pub on_follower: Option<Vec<String>>,
    /// Run when this node enters the fault state (as keepalived's notify_fault).
    pub on_fault: Option<Vec<String>>,
    /// A hook still running after this long is killed; 100ms to 300s.
    pub timeout: Duration,
}

impl Default for HookSettings {
    /// No hooks, and the default timeout (10s).
    fn default() -> HookSettings {
        HookSettings {
            on_leader: None,
            on_follower: None,
            on_fault: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

impl HookSettings {
    /// The configured hooks as (key, argv), in the order on-leader, on-follower, on-fault.
    fn configured(&self) -> impl Iterator<Item = (&'static str, &[String])> {
        [
            ("on-leader", &self.on_leader),
            ("on-follower", &self.on_follower),
            ("on-fault", &self.on_fault),
        ]
        .into_iter()
        .filter_map(|(key, argv)| Some((key, argv.as_deref()?)))
    }
}

/// All problems found in one config file. `Display` prints one problem per line, each naming
/// the key and the fix; multi-line problems (TOML syntax errors) are indented under their bullet.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .path.display(), ProblemList(.problems))]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// Displays "N problems:" and then one bulleted problem per line.
struct ProblemList<'a>(&'a [String]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(f, "{count} problem{plural}:")?;
        for problem in self.0 {
            let mut lines = problem.trim_end().lines();
            write!(f, "\n  - {}", lines.next().unwrap_or_default())?;
            for line in lines {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(path: &Path, problem: String) -> ConfigErrors {
        ConfigErrors {
            path: path.to_path_buf(),
            problems: vec![problem],
        }
    }
}

impl Settings {
    /// Reads, parses and validates the file at `path`, reporting every problem found.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = read_config_text(path)?;
        Settings::from_toml_str(path, &text)
    }

    /// Parses and validates `text` as if read from `path` (used in messages, and to resolve a
    /// relative `cluster.secret-file`).
    pub fn from_toml_str(path: &Path, text: &str) -> Result<Settings, ConfigErrors> {
        let file: FileSchema =
            toml::from_str(text).map_err(|e| ConfigErrors::one(path, e.to_string()))?;
        validate(path, file).map_err(|problems| ConfigErrors {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Whether any AWS access is configured at all: floating resources, an SSM secret, or a
    /// leader parameter.
    pub fn uses_aws(&self) -> bool {
        !self.elastic_ips.is_empty()
            || !self.route53_records.is_empty()
            || matches!(self.cluster.secret, SecretSource::Ssm { .. })
            || self.aws.leader_parameter.is_some()
    }

    /// True when no AWS call can be made without knowing the identity from IMDS: AWS is used
    /// ([`Settings::uses_aws`]) and one of `aws.region`, `aws.instance-id`,
    /// `aws.network-interface-id` and `aws.private-ip` is unset, or a record with
    /// `value = "public-ip"` exists and `aws.public-ip` is unset.
    pub fn needs_imds(&self) -> bool {
        let aws = &self.aws;
        let identity_incomplete = aws.region.is_none()
            || aws.instance_id.is_none()
            || aws.network_interface_id.is_none()
            || aws.private_ip.is_none();
        let public_ip_unknown = aws.public_ip.is_none()
            && self
                .route53_records
                .iter()
                .any(|record| record.value == RecordValue::PublicIp);
        self.uses_aws() && (identity_incomplete || public_ip_unknown)
    }

    /// Whether the leader makes AWS calls under its lease (claims, observations, the leader
    /// parameter); the timing rules of `[aws]` that involve the cluster timing apply then.
    fn leader_uses_aws(&self) -> bool {
        !self.elastic_ips.is_empty()
            || !self.route53_records.is_empty()
            || self.aws.leader_parameter.is_some()
    }

    /// A one-screen summary for `ha-agent check-config`.
    pub fn summary(&self) -> String {
        let node = &self.node;
        let cluster = &self.cluster;
        let members = 1 + self.peers.len();
        let leaders = std::iter::once(node.role)
            .chain(self.peers.iter().map(|p| p.role))
            .filter(|role| *role == MemberRole::Voter)
            .count();
        let majority = members / 2 + 1;
        let mut out = String::new();
        out.push_str(&format!("cluster          {}\n", cluster.name));
        out.push_str(&format!(
            "this node        id {}, {}, priority {}, listening on {}\n",
            node.id,
            node.role.as_str(),
            node.priority,
            node.listen
        ));
        out.push_str(&format!("state directory  {}\n", node.state_dir.display()));
        out.push_str(&format!(
            "status socket    {}\n",
            self.status.socket.display()
        ));
        match &cluster.secret {
            SecretSource::File { path, secret } => out.push_str(&format!(
                "secret file      {} ({} bytes)\n",
                path.display(),
                secret.as_bytes().len()
            )),
            SecretSource::Ssm { parameter } => out.push_str(&format!(
                "secret           SSM parameter {parameter} (SecureString, fetched at start)\n"
            )),
        }
        out.push_str(&format!(
            "timing           heartbeat every {}, election timeout {} ({} ticks)\n",
            humantime::format_duration(cluster.heartbeat_interval),
            humantime::format_duration(cluster.election_timeout),
            cluster.election_ticks()
        ));
        out.push_str("peers\n");
        for peer in &self.peers {
            out.push_str(&format!(
                "  id {:<4} {:<24} {}\n",
                peer.id,
                peer.address.to_string(),
                peer.role.as_str()
            ));
        }
        out.push_str(&format!(
            "membership       {members} voters ({leaders} may lead, {} witness), majority {majority}: \
             {} member(s) may fail\n",
            members - leaders,
            members - majority
        ));
        self.summarise_aws(&mut out);
        self.summarise_health(&mut out);
        out
    }

    /// The health part of [`Settings::summary`]: preemption, hand-off spacing, checks, hooks.
    fn summarise_health(&self, out: &mut String) {
        let cluster = &self.cluster;
        if cluster.preempt {
            out.push_str(&format!(
                "preemption       on: a higher-priority node takes leadership back once healthy \
                 for {}\n",
                humantime::format_duration(cluster.preempt_delay)
            ));
        } else {
            out.push_str("preemption       off: a recovered node does not take leadership back\n");
        }
        out.push_str(&format!(
            "hand-off spacing at least {} between two health or preemption hand-offs\n",
            humantime::format_duration(cluster.min_hand_off_interval)
        ));
        if self.checks.is_empty() {
            out.push_str("checks           none: this node is always healthy\n");
        } else {
            let note = if self.node.role == MemberRole::Witness {
                " (ignored for leadership: this node is a witness)"
            } else {
                ""
            };
            out.push_str(&format!(
                "checks           {} (healthy when all pass){note}\n",
                self.checks.len()
            ));
            for check in &self.checks {
                let probe = match &check.kind {
                    CheckKind::Http {
                        url,
                        expect_status,
                        body,
                    } => {
                        let body = body
                            .as_ref()
                            .map(|body| format!(", body containing {body:?}"))
                            .unwrap_or_default();
                        format!(
                            "GET {url}, expecting {}{body}",
                            status_range_text(expect_status)
                        )
                    }
                    CheckKind::Tcp { address } => format!("connect to {address}"),
                    CheckKind::Exec { command } => format!("run {}", argv_text(command)),
                };
                out.push_str(&format!(
                    "  check {:<8} {} {probe}; every {}, timeout {}, rise {}, fall {}\n",
                    check.name,
                    check.kind.as_str(),
                    humantime::format_duration(check.interval),
                    humantime::format_duration(check.timeout),
                    check.rise,
                    check.fall
                ));
            }
        }
        let hooks = &self.hooks;
        if hooks.configured().next().is_none() {
            out.push_str("hooks            none\n");
            return;
        }
        out.push_str(&format!(
            "hooks            timeout {}\n",
            humantime::format_duration(hooks.timeout)
        ));
        for (key, argv) in hooks.configured() {
            out.push_str(&format!("  {key:<14} {}\n", argv_text(argv)));
        }
    }

    /// The `[aws]` part of [`Settings::summary`]: identity, endpoints, timing, resources.
    fn summarise_aws(&self, out: &mut String) {
        let aws = &self.aws;
        if self.uses_aws() {
            let overrides: Vec<String> = [
                ("region", aws.region.clone()),
                ("instance", aws.instance_id.clone()),
                ("interface", aws.network_interface_id.clone()),
                ("private IP", aws.private_ip.map(|ip| ip.to_string())),
                ("public IP", aws.public_ip.map(|ip| ip.to_string())),
            ]
            .into_iter()
            .filter_map(|(what, value)| Some(format!("{what} {}", value?)))
            .collect();
            let identity = match (overrides.len(), self.needs_imds()) {
                (0, _) => format!("from IMDS at {}", aws.imds_endpoint),
                (_, true) => format!(
                    "{}; the rest from IMDS at {}",
                    overrides.join(", "),
                    aws.imds_endpoint
                ),
                (_, false) => overrides.join(", "),
            };
            out.push_str(&format!("aws identity     {identity}\n"));
        }
        if let Some(url) = &aws.endpoint_url {
            out.push_str(&format!(
                "aws endpoint     {url} (every AWS call goes here: for emulators only)\n"
            ));
        }
        if let Some(parameter) = &aws.leader_parameter {
            out.push_str(&format!("leader parameter {parameter}\n"));
        }
        if self.leader_uses_aws() {
            out.push_str(&format!(
                "aws timing       call timeout {}, reconcile every {}, hand off after {}\n",
                humantime::format_duration(aws.call_timeout),
                humantime::format_duration(aws.reconcile_interval),
                humantime::format_duration(aws.hand_off_after),
            ));
        }
        if self.elastic_ips.is_empty() && self.route53_records.is_empty() {
            out.push_str("resources        none: the group elects a leader but moves nothing\n");
            return;
        }
        out.push_str("resources\n");
        for eip in &self.elastic_ips {
            let interface = eip
                .network_interface_id
                .as_deref()
                .unwrap_or("the primary interface");
            let address = eip
                .private_ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "its primary private IP".to_string());
            out.push_str(&format!(
                "  elastic IP     {} on {interface}, {address}\n",
                eip.allocation_id
            ));
        }
        for record in &self.route53_records {
            let value = match (&record.value, &self.node.record_value) {
                (RecordValue::Node, Some(value)) => format!("node ({value})"),
                (value, _) => value.as_str().to_string(),
            };
            out.push_str(&format!(
                "  route53 record {} {} in zone {}, ttl {}, value {value}\n",
                record.name,
                record.record_type.as_str(),
                record.hosted_zone_id,
                record.ttl
            ));
        }
    }

    /// Problems that do not stop the agent but deserve attention. Empty if none.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Ok(meta) = fs::metadata(&self.config_path) {
            let mode = meta.permissions().mode();
            if mode & 0o002 != 0 {
                warnings.push(format!(
                    "{} is world-writable (mode {:04o}): any local user can change this node's \
                     configuration; run `chmod o-w {}`",
                    self.config_path.display(),
                    mode & 0o7777,
                    self.config_path.display()
                ));
            }
        }
        if let SecretSource::File { path, .. } = &self.cluster.secret {
            if let Ok(meta) = fs::metadata(path) {
                let mode = meta.permissions().mode();
                if mode & 0o022 != 0 {
                    warnings.push(format!(
                        "cluster.secret-file = {} is writable by group or others (mode {:04o}): \
                         they could replace the cluster key; run `chmod go-w {}`",
                        path.display(),
                        mode & 0o7777,
                        path.display()
                    ));
                }
            }
        }
        let cluster = &self.cluster;
        let ticks = cluster.election_ticks();
        let rounded = cluster.heartbeat_interval * u32::try_from(ticks).unwrap_or(u32::MAX);
        if rounded != cluster.election_timeout {
            warnings.push(format!(
                "cluster.election-timeout = {} is not a whole number of heartbeat intervals ({}); \
                 ha-agent counts {ticks} ticks, i.e. {}",
                humantime::format_duration(cluster.election_timeout),
                humantime::format_duration(cluster.heartbeat_interval),
                humantime::format_duration(rounded)
            ));
        }
        // A witness never keeps leadership, so its own list of resources does not matter.
        if self.elastic_ips.is_empty()
            && self.route53_records.is_empty()
            && self.node.role == MemberRole::Voter
        {
            warnings.push(
                "no [[elastic-ip]] or [[route53-record]] is configured: the group will elect a \
                 leader but move nothing; add the floating resources (the same list on every \
                 voter)"
                    .to_string(),
            );
        }
        if let Some(url) = &self.aws.endpoint_url {
            warnings.push(format!(
                "aws.endpoint-url = {url:?}: every AWS call goes to {url}, not to AWS: for \
                 emulators only; remove it in production"
            ));
        }
        if self.node.role == MemberRole::Witness && !self.checks.is_empty() {
            warnings.push(format!(
                "[[check]]: this node is a witness (node.role = \"witness\") and never keeps \
                 leadership, so its {} check(s) are ignored for leadership; remove them, or make \
                 this node a voter if it should run the service",
                self.checks.len()
            ));
        }
        warnings
    }
}

/// For `ha-agent status --config PATH`: finds `[status] socket` (default
/// [`DEFAULT_STATUS_SOCKET`]) without reading the secret file or checking anything else, since
/// `status` runs as an unprivileged member of group ha-agent.
pub fn status_socket_from_file(path: &Path) -> Result<PathBuf, ConfigErrors> {
    let text = read_config_text(path)?;
    let file: StatusOnlySchema =
        toml::from_str(&text).map_err(|e| ConfigErrors::one(path, e.to_string()))?;
    let mut problems = Vec::new();
    let socket = status_socket(file.status.socket, &mut problems);
    match socket {
        Some(socket) if problems.is_empty() => Ok(socket),
        _ => Err(ConfigErrors {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

fn read_config_text(path: &Path) -> Result<String, ConfigErrors> {
    fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(
            path,
            format!(
                "cannot read the configuration file {}: {e}; check the path (default {}) and \
                 that this user may read it",
                path.display(),
                DEFAULT_CONFIG_PATH
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// File schema
// ---------------------------------------------------------------------------------------------
//
// Required keys are `Option`s here so that a missing key becomes one problem among the others
// (with the fix spelled out) instead of stopping deserialisation at the first one.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSchema {
    #[serde(default)]
    cluster: ClusterTable,
    #[serde(default)]
    node: NodeTable,
    #[serde(default)]
    peer: Vec<PeerTable>,
    #[serde(default)]
    status: StatusTable,
    #[serde(default)]
    aws: AwsTable,
    #[serde(default)]
    elastic_ip: Vec<ElasticIpTable>,
    #[serde(default)]
    route53_record: Vec<Route53RecordTable>,
    #[serde(default)]
    check: Vec<CheckTable>,
    #[serde(default)]
    hooks: HooksTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClusterTable {
    name: Option<String>,
    secret_file: Option<PathBuf>,
    secret_ssm_parameter: Option<String>,
    heartbeat_interval: Option<String>,
    election_timeout: Option<String>,
    preempt: Option<bool>,
    preempt_delay: Option<String>,
    min_hand_off_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeTable {
    id: Option<i64>,
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    role: Option<MemberRole>,
    priority: Option<i64>,
    record_value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PeerTable {
    id: Option<i64>,
    address: Option<String>,
    role: Option<MemberRole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StatusTable {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AwsTable {
    region: Option<String>,
    instance_id: Option<String>,
    network_interface_id: Option<String>,
    private_ip: Option<String>,
    public_ip: Option<String>,
    imds_endpoint: Option<String>,
    endpoint_url: Option<String>,
    leader_parameter: Option<String>,
    call_timeout: Option<String>,
    reconcile_interval: Option<String>,
    hand_off_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ElasticIpTable {
    allocation_id: Option<String>,
    network_interface_id: Option<String>,
    private_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Route53RecordTable {
    hosted_zone_id: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
    ttl: Option<i64>,
    value: Option<String>,
}

/// One `[[check]]`. Which keys apply depends on `type`; all are optional here, and a key that
/// does not belong to the check's type is a problem found in validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CheckTable {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    // type = "http"
    url: Option<String>,
    /// A status (`200`, `"200"`) or an inclusive range (`"200-299"`): either TOML type.
    expect_status: Option<toml::Value>,
    body: Option<String>,
    // type = "tcp"
    address: Option<String>,
    // type = "exec"
    command: Option<Vec<String>>,
    // every type
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HooksTable {
    on_leader: Option<Vec<String>>,
    on_follower: Option<Vec<String>>,
    on_fault: Option<Vec<String>>,
    timeout: Option<String>,
}

/// What `status_socket_from_file` reads: the `[status]` table (still strict), nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct StatusOnlySchema {
    #[serde(default)]
    status: StatusTable,
}

// ---------------------------------------------------------------------------------------------
// Validation: the one conversion from schema to settings
// ---------------------------------------------------------------------------------------------

/// Converts the file schema into settings, collecting every problem. A helper that returns
/// `None` has always pushed a problem explaining why.
fn validate(config_path: &Path, file: FileSchema) -> Result<Settings, Vec<String>> {
    let mut problems = Vec::new();
    let FileSchema {
        cluster,
        node,
        peer: peers,
        status,
        aws,
        elastic_ip: elastic_ips,
        route53_record: route53_records,
        check: checks,
        hooks,
    } = file;

    // [cluster]
    let name = cluster_name(cluster.name, &mut problems);
    let secret = secret_source(
        config_path,
        cluster.secret_file,
        cluster.secret_ssm_parameter,
        &mut problems,
    );
    let heartbeat_interval = duration(
        "cluster.heartbeat-interval",
        cluster.heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL,
        &mut problems,
    )
    .filter(|interval| check_heartbeat_interval(*interval, &mut problems));
    let election_timeout = duration(
        "cluster.election-timeout",
        cluster.election_timeout,
        DEFAULT_ELECTION_TIMEOUT,
        &mut problems,
    )
    .filter(|timeout| check_election_timeout(*timeout, heartbeat_interval, &mut problems));
    let preempt = cluster.preempt.unwrap_or(false);
    let preempt_delay = duration(
        "cluster.preempt-delay",
        cluster.preempt_delay,
        DEFAULT_PREEMPT_DELAY,
        &mut problems,
    );
    // Health and preemption hand-offs happen only with checks or preemption; the spacing rule
    // holds then, or when the key is given, so that a group using neither may keep a long
    // election timeout.
    let hand_offs_possible = preempt || !checks.is_empty();
    let min_hand_off_given = cluster.min_hand_off_interval.is_some();
    let min_hand_off_interval = duration(
        "cluster.min-hand-off-interval",
        cluster.min_hand_off_interval,
        DEFAULT_MIN_HAND_OFF_INTERVAL,
        &mut problems,
    )
    .filter(|interval| {
        check_min_hand_off_interval(
            *interval,
            min_hand_off_given,
            election_timeout.filter(|_| min_hand_off_given || hand_offs_possible),
            &mut problems,
        )
    });

    // [node]
    let node_id = member_id("node.id", node.id, &mut problems);
    let listen = match node.listen.as_deref() {
        Some(text) => socket_address("node.listen", text, &mut problems)
            .filter(|address| check_listen_address(*address, &mut problems)),
        None => {
            problems.push(
                "node.listen is required: set it to this instance's private IP and the peer port, \
                 e.g. listen = \"10.0.1.10:7946\""
                    .to_string(),
            );
            None
        }
    };
    let state_dir = absolute_path(
        "node.state-dir",
        node.state_dir,
        DEFAULT_STATE_DIR,
        &mut problems,
    );
    let role = node.role.unwrap_or(MemberRole::Voter);
    let priority = node_priority(role, node.priority, &mut problems);
    let record_value = node_record_value(node.record_value, &mut problems);

    // [[peer]]
    let peers = peer_settings(peers, &mut problems);
    check_membership(node_id, listen, role, &peers, &mut problems);

    // [status]
    let socket = status_socket(status.socket, &mut problems);

    // [aws], [[elastic-ip]], [[route53-record]]. The rules that relate [aws] timing to the
    // cluster timing hold the leader's AWS calls to its lease; a leader that makes no AWS calls
    // (no resources, no leader parameter) is held to none of them, so that a group without
    // AWS may keep a short election timeout.
    let leader_uses_aws =
        !elastic_ips.is_empty() || !route53_records.is_empty() || aws.leader_parameter.is_some();
    let timing = heartbeat_interval
        .zip(election_timeout)
        .filter(|_| leader_uses_aws);
    let aws = aws_settings(aws, timing, &mut problems);
    let elastic_ips = elastic_ip_settings(elastic_ips, &mut problems);
    let route53_records = route53_record_settings(
        route53_records,
        record_value.as_ref().map(Option::as_deref),
        &mut problems,
    );

    // [[check]], [hooks]
    let checks = check_settings(checks, &mut problems);
    let hooks = hook_settings(hooks, &mut problems);

    let (
        Some(name),
        Some(secret),
        Some(heartbeat_interval),
        Some(election_timeout),
        Some(preempt_delay),
        Some(min_hand_off_interval),
        Some(id),
        Some(listen),
        Some(state_dir),
        Some(priority),
        Some(record_value),
        Some(socket),
        Some(aws),
        Some(elastic_ips),
        Some(route53_records),
        Some(checks),
        Some(hooks),
    ) = (
        name,
        secret,
        heartbeat_interval,
        election_timeout,
        preempt_delay,
        min_hand_off_interval,
        node_id,
        listen,
        state_dir,
        priority,
        record_value,
        socket,
        aws,
        elastic_ips,
        route53_records,
        checks,
        hooks,
    )
    else {
        debug_assert!(
            !problems.is_empty(),
            "a setting is missing without a problem"
        );
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let peers = peers
        .into_iter()
        .filter_map(|peer| {
            Some(PeerSettings {
                id: peer.id?,
                address: peer.address?,
                role: peer.role,
            })
        })
        .collect();
    Ok(Settings {
        config_path: config_path.to_path_buf(),
        cluster: ClusterSettings {
            name,
            secret,
            heartbeat_interval,
            election_timeout,
            preempt,
            preempt_delay,
            min_hand_off_interval,
        },
        node: NodeSettings {
            id,
            listen,
            state_dir,
            role,
            priority,
            record_value,
        },
        peers,
        status: StatusSettings { socket },
        aws,
        elastic_ips,
        route53_records,
        checks,
        hooks,
    })
}

fn cluster_name(name: Option<String>, problems: &mut Vec<String>) -> Option<String> {
    let Some(name) = name else {
        problems.push(
            "cluster.name is required: set a short label for this group, e.g. name = \"web\""
                .to_string(),
        );
        return None;
    };
    if name.is_empty() {
        problems.push(
            "cluster.name is empty: set a short label for this group, e.g. name = \"web\""
                .to_string(),
        );
        return None;
    }
    label("cluster.name", name, MAX_CLUSTER_NAME_LEN, problems)
}

/// A short label (`cluster.name`, `check[i].name`): letters, digits, '.', '_' and '-', at most
/// `max_len` characters. Reports every problem under `key`.
fn label(key: &str, name: String, max_len: usize, problems: &mut Vec<String>) -> Option<String> {
    let before = problems.len();
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        problems.push(format!(
            "{key} = {name:?} contains {bad:?}: use only letters, digits, '.', '_' and '-'"
        ));
    }
    if name.len() > max_len {
        problems.push(format!(
            "{key} is {} characters long: use at most {max_len}",
            name.len()
        ));
    }
    (problems.len() == before).then_some(name)
}

/// Exactly one of `secret-file` (read and checked now) and `secret-ssm-parameter` (fetched by
/// the daemon at start).
fn secret_source(
    config_path: &Path,
    file: Option<PathBuf>,
    parameter: Option<String>,
    problems: &mut Vec<String>,
) -> Option<SecretSource> {
    match (file, parameter) {
        (Some(_), Some(_)) => {
            problems.push(
                "cluster.secret-file and cluster.secret-ssm-parameter are both set: the cluster \
                 key comes from exactly one place; remove one of them"
                    .to_string(),
            );
            None
        }
        (None, None) => {
            problems.push(format!(
                "cluster.secret-file (or cluster.secret-ssm-parameter) is required: point \
                 secret-file at the key file shared by every member, e.g. secret-file = \
                 \"/etc/ha-agent/cluster.key\", created with `{SECRET_RECIPE}` and copied to each \
                 member; or name an SSM SecureString parameter holding the key, e.g. \
                 secret-ssm-parameter = \"/ha-agent/web/key\""
            ));
            None
        }
        (Some(path), None) => {
            let path = resolve_relative(config_path, path);
            let secret = read_secret(&path, problems)?;
            Some(SecretSource::File { path, secret })
        }
        (None, Some(parameter)) => {
            ssm_parameter_name("cluster.secret-ssm-parameter", parameter, false, problems)
                .map(|parameter| SecretSource::Ssm { parameter })
        }
    }
}

/// A relative path is taken relative to the directory holding the config file.
fn resolve_relative(config_path: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    match config_path.parent() {
        Some(dir) => dir.join(path),
        None => path,
    }
}

/// Reads and checks the shared key: a regular file, not world-readable, at least
/// `MIN_SECRET_LEN` bytes once surrounding ASCII whitespace is trimmed.
fn read_secret(path: &Path, problems: &mut Vec<String>) -> Option<Secret> {
    let shown = path.display();
    let recipe = SECRET_RECIPE.replace("FILE", &shown.to_string());
    // Look before opening: opening a FIFO for reading would block.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            problems.push(format!(
                "cluster.secret-file = {shown}: cannot read it: {e}; create the key once with \
                 `{recipe}` and copy the same file to every member"
            ));
            return None;
        }
    };
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        problems.push(format!(
            "cluster.secret-file = {shown} is {kind}: point it at the key file itself"
        ));
        return None;
    }
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            problems.push(format!(
                "cluster.secret-file = {shown}: cannot read it: {e}; run ha-agent as a user that \
                 may read the key (root, or the file's group)"
            ));
            return None;
        }
    };
    // Check the mode of the file actually opened, in case the path changed in between.
    let mode = file
        .metadata()
        .map(|m| m.permissions().mode())
        .unwrap_or(meta.permissions().mode());
    let mut ok = true;
    if mode & 0o004 != 0 {
        problems.push(format!(
            "cluster.secret-file = {shown} is world-readable (mode {:04o}): any local user could \
             pose as a member; run `chmod o-r {shown}` (e.g. `chmod 0640 {shown}`)",
            mode & 0o7777
        ));
        ok = false;
    }
    let mut bytes = Vec::new();
    if let Err(e) = (&mut file)
        .take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut bytes)
    {
        problems.push(format!(
            "cluster.secret-file = {shown}: cannot read it: {e}; run ha-agent as a user that may \
             read the key (root, or the file's group)"
        ));
        return None;
    }
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        problems.push(format!(
            "cluster.secret-file = {shown} is larger than {MAX_SECRET_FILE_LEN} bytes: that is not \
             a key file; point it at the key, created with `{recipe}`"
        ));
        return None;
    }
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_SECRET_LEN {
        problems.push(format!(
            "cluster.secret-file = {shown} holds only {} bytes (ignoring surrounding whitespace): \
             a key needs at least {MIN_SECRET_LEN}; create one with `{recipe}` and copy it to \
             every member",
            trimmed.len()
        ));
        ok = false;
    }
    ok.then(|| Secret(trimmed.to_vec()))
}

/// Parses a humantime duration, or takes the default when the key is absent.
fn duration(
    key: &str,
    text: Option<String>,
    default: Duration,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    let Some(text) = text else {
        return Some(default);
    };
    match humantime::parse_duration(&text) {
        Ok(value) => Some(value),
        Err(e) => {
            problems.push(format!(
                "{key} = {text:?} is not a duration ({e}): write a number with a unit, e.g. \
                 \"{}\"",
                humantime::format_duration(default)
            ));
            None
        }
    }
}

fn check_heartbeat_interval(interval: Duration, problems: &mut Vec<String>) -> bool {
    if (MIN_HEARTBEAT_INTERVAL..=MAX_HEARTBEAT_INTERVAL).contains(&interval) {
        return true;
    }
    problems.push(format!(
        "cluster.heartbeat-interval = {} is out of range: use {} to {} (default {})",
        humantime::format_duration(interval),
        humantime::format_duration(MIN_HEARTBEAT_INTERVAL),
        humantime::format_duration(MAX_HEARTBEAT_INTERVAL),
        humantime::format_duration(DEFAULT_HEARTBEAT_INTERVAL),
    ));
    false
}

/// The election timeout must span several heartbeats and stay short enough to be a failover.
/// Compared with the heartbeat interval only when that one is valid.
fn check_election_timeout(
    timeout: Duration,
    heartbeat_interval: Option<Duration>,
    problems: &mut Vec<String>,
) -> bool {
    if timeout > MAX_ELECTION_TIMEOUT {
        problems.push(format!(
            "cluster.election-timeout = {} is too long: failover would wait that long after the \
             leader stops; use at most {} (default {})",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_ELECTION_TIMEOUT),
            humantime::format_duration(DEFAULT_ELECTION_TIMEOUT),
        ));
        return false;
    }
    if let Some(interval) = heartbeat_interval {
        let minimum = interval * MIN_ELECTION_TICKS;
        if timeout < minimum {
            let suggested = (interval * 10).min(MAX_ELECTION_TIMEOUT);
            problems.push(format!(
                "cluster.election-timeout = {} is too short for cluster.heartbeat-interval = {}: \
                 raft must miss several heartbeats before it suspects the leader, so the election \
                 timeout must be at least {MIN_ELECTION_TICKS} heartbeat intervals ({}); \
                 {} is comfortable",
                humantime::format_duration(timeout),
                humantime::format_duration(interval),
                humantime::format_duration(minimum),
                humantime::format_duration(suggested),
            ));
            return false;
        }
    }
    true
}

fn member_id(key: &str, id: Option<i64>, problems: &mut Vec<String>) -> Option<u64> {
    let Some(id) = id else {
        problems.push(format!(
            "{key} is required: give every member its own positive number (1, 2, 3, …), the same \
             in every member's configuration"
        ));
        return None;
    };
    match u64::try_from(id) {
        Ok(id) if id > 0 => Some(id),
        _ => {
            problems.push(format!(
                "{key} = {id} is invalid: member ids are positive numbers (1, 2, 3, …)"
            ));
            None
        }
    }
}

/// Parses `ip:port`; checks shared by the listen address and peer addresses.
fn socket_address(key: &str, text: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    let address: SocketAddr = match text.parse() {
        Ok(address) => address,
        Err(_) => {
            problems.push(format!(
                "{key} = {text:?} is not an ip:port address: write an IP address and port, e.g. \
                 \"10.0.1.11:7946\" or \"[fd00::11]:7946\" (host names are not resolved)"
            ));
            return None;
        }
    };
    if address.port() == 0 {
        problems.push(format!(
            "{key} = {address} has port 0: use the port the agents listen on, e.g. 7946"
        ));
        return None;
    }
    if address.ip().is_multicast() {
        problems.push(format!(
            "{key} = {address} is a multicast address: use the instance's own private IP"
        ));
        return None;
    }
    Some(address)
}

fn check_listen_address(address: SocketAddr, problems: &mut Vec<String>) -> bool {
    if !address.ip().is_unspecified() {
        return true;
    }
    problems.push(format!(
        "node.listen = {address} is an unspecified address: the other members dial the address \
         their own [[peer]] entries give for this node, so listen on exactly that: this \
         instance's own private IP, e.g. \"10.0.1.10:{}\"",
        address.port()
    ));
    false
}

fn absolute_path(
    key: &str,
    path: Option<PathBuf>,
    default: &str,
    problems: &mut Vec<String>,
) -> Option<PathBuf> {
    let path = path.unwrap_or_else(|| PathBuf::from(default));
    if path.is_absolute() {
        return Some(path);
    }
    problems.push(format!(
        "{key} = {:?} must be an absolute path, e.g. \"{default}\" (the default)",
        path.display().to_string()
    ));
    None
}

fn node_priority(
    role: MemberRole,
    priority: Option<i64>,
    problems: &mut Vec<String>,
) -> Option<i64> {
    let default = match role {
        MemberRole::Voter => DEFAULT_VOTER_PRIORITY,
        MemberRole::Witness => DEFAULT_WITNESS_PRIORITY,
    };
    let priority = priority.unwrap_or(default);
    if !(0..=MAX_PRIORITY).contains(&priority) {
        problems.push(format!(
            "node.priority = {priority} is out of range: use 0 to {MAX_PRIORITY} (higher is \
             preferred when electing a leader; default {DEFAULT_VOTER_PRIORITY} for a voter, \
             {DEFAULT_WITNESS_PRIORITY} for a witness)"
        ));
        return None;
    }
    if role == MemberRole::Witness && priority > 0 {
        problems.push(format!(
            "node.priority = {priority} on a witness (node.role = \"witness\"): a witness never \
             keeps leadership; set node.priority = 0 or remove it"
        ));
        return None;
    }
    Some(priority)
}

/// A peer as far as it could be parsed; `None` fields already have a problem recorded.
struct PartialPeer {
    id: Option<u64>,
    address: Option<SocketAddr>,
    role: MemberRole,
}

fn peer_settings(peers: Vec<PeerTable>, problems: &mut Vec<String>) -> Vec<PartialPeer> {
    peers
        .into_iter()
        .enumerate()
        .map(|(index, peer)| {
            let key = format!("peer[{index}]");
            let id = member_id(&format!("{key}.id"), peer.id, problems);
            let address = match peer.address.as_deref() {
                None => {
                    problems.push(format!(
                        "{key}.address is required: set it to that member's private IP and peer \
                         port (its node.listen), e.g. address = \"10.0.1.11:7946\""
                    ));
                    None
                }
                Some(text) => {
                    socket_address(&format!("{key}.address"), text, problems).filter(|address| {
                        if !address.ip().is_unspecified() {
                            return true;
                        }
                        problems.push(format!(
                            "{key}.address = {address} is an unspecified address and cannot be \
                             dialled: use that member's own private IP, e.g. \"10.0.1.11:{}\"",
                            address.port()
                        ));
                        false
                    })
                }
            };
            PartialPeer {
                id,
                address,
                role: peer.role.unwrap_or(MemberRole::Voter),
            }
        })
        .collect()
}

/// The membership rules: unique ids and addresses, this node not among its peers, and a group
/// size that can fail over.
fn check_membership(
    node_id: Option<u64>,
    listen: Option<SocketAddr>,
    node_role: MemberRole,
    peers: &[PartialPeer],
    problems: &mut Vec<String>,
) {
    // Entries that describe this node itself are reported once and left out of the counts
    // below, so that fixing them does not reveal a new problem.
    let mut is_self = vec![false; peers.len()];
    for (index, peer) in peers.iter().enumerate() {
        if let (Some(id), Some(node_id)) = (peer.id, node_id) {
            if id == node_id {
                problems.push(format!(
                    "peer[{index}].id = {id}: this node (id {node_id}) is listed among its own \
                     peers at peer[{index}]; remove that [[peer]] entry"
                ));
                is_self[index] = true;
                continue;
            }
        }
        if let (Some(address), Some(listen)) = (peer.address, listen) {
            if address == listen {
                problems.push(format!(
                    "peer[{index}].address = {address}: this node (node.listen = {listen}) is \
                     listed among its own peers at peer[{index}]; remove that [[peer]] entry, or \
                     fix the address if it is another member"
                ));
                is_self[index] = true;
            }
        }
    }
    for (index, peer) in peers.iter().enumerate() {
        let earlier = &peers[..index];
        if let Some(id) = peer.id.filter(|_| !is_self[index]) {
            if let Some(first) = earlier
                .iter()
                .enumerate()
                .position(|(i, p)| !is_self[i] && p.id == Some(id))
            {
                problems.push(format!(
                    "peer[{index}].id = {id} is also the id of peer[{first}]: every member needs \
                     its own id; fix one of them"
                ));
            }
        }
        if let Some(address) = peer.address.filter(|_| !is_self[index]) {
            if let Some(first) = earlier
                .iter()
                .enumerate()
                .position(|(i, p)| !is_self[i] && p.address == Some(address))
            {
                problems.push(format!(
                    "peer[{index}].address = {address} is also the address of peer[{first}]: \
                     each member listens on its own address; fix one of them"
                ));
            }
        }
    }

    let others: Vec<&PartialPeer> = peers
        .iter()
        .zip(&is_self)
        .filter(|(_, is_self)| !**is_self)
        .map(|(peer, _)| peer)
        .collect();
    let members = 1 + others.len();
    if members < MIN_MEMBERS {
        problems.push(format!(
            "[[peer]]: the group has {members} voter(s) (this node and {} peer(s)), and needs at \
             least {MIN_MEMBERS}: two voters cannot fail over: losing one leaves no majority; add \
             a third instance or a witness (role = \"witness\") as another [[peer]] here and on \
             every member",
            others.len()
        ));
    } else if members > MAX_MEMBERS {
        problems.push(format!(
            "[[peer]]: the group has {members} members (this node and {} peers), more than \
             {MAX_MEMBERS}: larger groups slow elections and every heartbeat round, and ha-agent \
             targets small groups; use 3 or 5 members (they survive 1 or 2 failures)",
            others.len()
        ));
    }
    let leaders = std::iter::once(node_role)
        .chain(others.iter().map(|peer| peer.role))
        .filter(|role| *role == MemberRole::Voter)
        .count();
    if leaders < MIN_LEADERS {
        problems.push(format!(
            "node.role / peer[i].role: only {leaders} member(s) may lead (role = \"voter\"); a \
             witness never keeps leadership, so there is nobody to fail over to: make at least \
             {MIN_LEADERS} members voters"
        ));
    }
}

fn status_socket(socket: Option<PathBuf>, problems: &mut Vec<String>) -> Option<PathBuf> {
    absolute_path("status.socket", socket, DEFAULT_STATUS_SOCKET, problems)
}

/// `[node] record-value`: `Some(None)` when absent, `None` when invalid (a problem is pushed).
/// Whether it suits the records that use it is checked with each record.
fn node_record_value(value: Option<String>, problems: &mut Vec<String>) -> Option<Option<String>> {
    match value {
        Some(value) if value.trim().is_empty() => {
            problems.push(
                "node.record-value is empty: set this node's own value for the [[route53-record]] \
                 entries with value = \"node\" (e.g. its IP address), or remove the key"
                    .to_string(),
            );
            None
        }
        value => Some(value),
    }
}

/// An optional key: `Some(None)` when absent, otherwise what `check` makes of the value
/// (`None` when invalid, with a problem pushed).
fn optional<V, T>(value: Option<V>, check: impl FnOnce(V) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(value) => check(value).map(Some),
    }
}

/// An SSM parameter name: a plain name, or a path that starts with '/'; letters, digits and
/// `_.-/` only; at most 1011 characters and 15 levels. `written` marks a parameter the agent
/// writes (`PutParameter`), which AWS refuses for names that start with "aws" or "ssm".
fn ssm_parameter_name(
    key: &str,
    name: String,
    written: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    let example = if written {
        "/ha-agent/web/leader"
    } else {
        "/ha-agent/web/key"
    };
    if name.is_empty() {
        problems.push(format!(
            "{key} is empty: name the SSM parameter, e.g. \"{example}\", or remove the key"
        ));
        return None;
    }
    let before = problems.len();
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        problems.push(format!(
            "{key} = {name:?} contains {bad:?}: SSM parameter names use only letters, digits, \
             '_', '.', '-' and '/', e.g. \"{example}\""
        ));
    }
    if name.contains('/') && !name.starts_with('/') {
        problems.push(format!(
            "{key} = {name:?} contains '/' but does not start with it: a parameter in a \
             hierarchy is named by its full path, e.g. \"/{name}\""
        ));
    } else if name.contains('/') && name[1..].split('/').any(str::is_empty) {
        // A name with a '/' starts with one here, so `[1..]` cuts at a character boundary.
        problems.push(format!(
            "{key} = {name:?} has an empty path segment ('//' or a trailing '/'): write the full \
             path of the parameter, e.g. \"{example}\""
        ));
    }
    if name.len() > MAX_SSM_PARAMETER_LEN {
        problems.push(format!(
            "{key} is {} characters long: SSM allows at most {MAX_SSM_PARAMETER_LEN}; choose a \
             shorter name",
            name.len()
        ));
    }
    let levels = name
        .split('/')
        .filter(|segment| !segment.is_empty())
        .count();
    if levels > MAX_SSM_PARAMETER_LEVELS {
        problems.push(format!(
            "{key} = {name:?} is {levels} levels deep: SSM allows at most \
             {MAX_SSM_PARAMETER_LEVELS}; choose a shallower path"
        ));
    }
    let bare = name.trim_start_matches('/').to_ascii_lowercase();
    if written && (bare.starts_with("aws") || bare.starts_with("ssm")) {
        problems.push(format!(
            "{key} = {name:?} starts with \"aws\" or \"ssm\": AWS reserves those names and \
             refuses to write them; choose another, e.g. \"{example}\""
        ));
    }
    (problems.len() == before).then_some(name)
}

fn region(text: String, problems: &mut Vec<String>) -> Option<String> {
    let shaped = !text.is_empty()
        && !text.starts_with('-')
        && !text.ends_with('-')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if shaped {
        return Some(text);
    }
    problems.push(format!(
        "aws.region = {text:?} is not a region name: write it like \"us-east-1\" (lower-case \
         letters, digits and '-'), or remove it to take this instance's region from IMDS"
    ));
    None
}

/// An EC2 id: `prefix` followed by lower-case hex digits, as many as one of `lengths` (any
/// number if `lengths` is empty).
fn resource_id(
    key: &str,
    text: String,
    prefix: &str,
    lengths: &[usize],
    example: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let digits = text.strip_prefix(prefix).unwrap_or_default();
    let shaped = !digits.is_empty()
        && (lengths.is_empty() || lengths.contains(&digits.len()))
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if shaped {
        return Some(text);
    }
    let count = match lengths {
        [] => String::new(),
        [only] => format!("{only} "),
        [init @ .., last] => format!(
            "{} or {last} ",
            init.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    problems.push(format!(
        "{key} = {text:?} is malformed: write \"{prefix}\" followed by {count}lower-case hex \
         digits, e.g. \"{example}\""
    ));
    None
}

fn ipv4(key: &str, text: &str, example: &str, problems: &mut Vec<String>) -> Option<Ipv4Addr> {
    match text.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(format!(
                "{key} = {text:?} is not an IPv4 address: write it like \"{example}\""
            ));
            None
        }
    }
}

/// An `http://` or `https://` URL with a host (and maybe a port and a path); returned without
/// trailing slashes, so that callers can append paths.
fn http_url(key: &str, text: String, example: &str, problems: &mut Vec<String>) -> Option<String> {
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        problems.push(format!(
            "{key} = {text:?} is not an http:// or https:// URL: write e.g. \"{example}\""
        ));
        return None;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let fault = if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace")
    } else if text.contains(['?', '#']) {
        Some("has a query or fragment")
    } else if authority.contains('@') {
        Some("carries credentials (user@): the SDK signs its calls itself")
    } else if authority.is_empty() {
        Some("has no host")
    } else if !valid_authority(authority) {
        Some("has no valid host[:port]")
    } else {
        None
    };
    if let Some(fault) = fault {
        problems.push(format!(
            "{key} = {text:?} {fault}: write a URL with a host and optional port, e.g. \
             \"{example}\""
        ));
        return None;
    }
    Some(text.trim_end_matches('/').to_string())
}

/// `host[:port]`, where host is a name, an IPv4 address or a bracketed IPv6 address, and port
/// a non-zero number.
fn valid_authority(authority: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (host.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        (host_ok, port)
    };
    host_ok && port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0))
}

/// `[aws]`. `timing` is the cluster's (heartbeat interval, election timeout) when the leader
/// makes AWS calls and both are valid; the rules that relate `[aws]` to them apply only then.
fn aws_settings(
    aws: AwsTable,
    timing: Option<(Duration, Duration)>,
    problems: &mut Vec<String>,
) -> Option<AwsSettings> {
    let region = optional(aws.region, |text| region(text, problems));
    let instance_id = optional(aws.instance_id, |text| {
        resource_id(
            "aws.instance-id",
            text,
            "i-",
            &[8, 17],
            "i-0123456789abcdef0",
            problems,
        )
    });
    let network_interface_id = optional(aws.network_interface_id, |text| {
        resource_id(
            "aws.network-interface-id",
            text,
            "eni-",
            &[],
            "eni-0123456789abcdef0",
            problems,
        )
    });
    let private_ip = optional(aws.private_ip, |text| {
        ipv4("aws.private-ip", &text, "10.0.1.10", problems)
    });
    let public_ip = optional(aws.public_ip, |text| {
        ipv4("aws.public-ip", &text, "203.0.113.10", problems)
    });
    let imds_endpoint = http_url(
        "aws.imds-endpoint",
        aws.imds_endpoint
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string()),
        DEFAULT_IMDS_ENDPOINT,
        problems,
    );
    let endpoint_url = optional(aws.endpoint_url, |text| {
        http_url("aws.endpoint-url", text, "http://127.0.0.1:5000", problems)
    });
    let leader_parameter = optional(aws.leader_parameter, |text| {
        ssm_parameter_name("aws.leader-parameter", text, true, problems)
    });
    let call_timeout = duration(
        "aws.call-timeout",
        aws.call_timeout,
        DEFAULT_CALL_TIMEOUT,
        problems,
    )
    .filter(|timeout| check_call_timeout(*timeout, timing, problems));
    let reconcile_interval = duration(
        "aws.reconcile-interval",
        aws.reconcile_interval,
        DEFAULT_RECONCILE_INTERVAL,
        problems,
    )
    .filter(|interval| {
        if *interval >= MIN_RECONCILE_INTERVAL {
            return true;
        }
        problems.push(format!(
            "aws.reconcile-interval = {} is too short: the leader re-checks every resource this \
             often, and more often only spends AWS API quota and invites throttling; use at \
             least {} (default {})",
            humantime::format_duration(*interval),
            humantime::format_duration(MIN_RECONCILE_INTERVAL),
            humantime::format_duration(DEFAULT_RECONCILE_INTERVAL),
        ));
        false
    });
    let hand_off_after = duration(
        "aws.hand-off-after",
        aws.hand_off_after,
        DEFAULT_HAND_OFF_AFTER,
        problems,
    )
    .filter(|after| check_hand_off_after(*after, timing.map(|(_, election)| election), problems));
    Some(AwsSettings {
        region: region?,
        instance_id: instance_id?,
        network_interface_id: network_interface_id?,
        private_ip: private_ip?,
        public_ip: public_ip?,
        imds_endpoint: imds_endpoint?,
        endpoint_url: endpoint_url?,
        leader_parameter: leader_parameter?,
        call_timeout: call_timeout?,
        reconcile_interval: reconcile_interval?,
        hand_off_after: hand_off_after?,
    })
}

/// The leader's lease for this cluster timing, computed as the daemon hands it to the core
/// (whole milliseconds per tick, whole ticks per election timeout).
fn lease(heartbeat_interval: Duration, election_ticks: u64) -> Duration {
    let tick_ms = u64::try_from(heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ha_agent_core::lease_duration_ms(tick_ms, election_ticks))
}

/// The lease rule (core crate docs, rule 4): a leader starts no AWS call whose deadline runs
/// past the end of its lease. A lease is renewed by heartbeat rounds, so right after a renewal
/// the leader holds about `lease - one heartbeat interval` of it; a call timeout longer than
/// that would leave the leader unable to start any call at all. Hence
/// `call_timeout + heartbeat_interval <= lease`, checked when `timing` is known.
fn check_call_timeout(
    timeout: Duration,
    timing: Option<(Duration, Duration)>,
    problems: &mut Vec<String>,
) -> bool {
    if timeout < MIN_CALL_TIMEOUT {
        problems.push(format!(
            "aws.call-timeout = {} is too short: an AWS call, retries included, needs more; use \
             at least {} (default {})",
            humantime::format_duration(timeout),
            humantime::format_duration(MIN_CALL_TIMEOUT),
            humantime::format_duration(DEFAULT_CALL_TIMEOUT),
        ));
        return false;
    }
    let Some((heartbeat, election)) = timing else {
        return true;
    };
    let ticks = u64::try_from(election.as_nanos() / heartbeat.as_nanos().max(1)).unwrap_or(0);
    let lease_now = lease(heartbeat, ticks);
    if timeout + heartbeat <= lease_now {
        return true;
    }
    let mut fixes = Vec::new();
    let longest = lease_now.saturating_sub(heartbeat);
    if longest >= MIN_CALL_TIMEOUT {
        fixes.push(format!(
            "lower aws.call-timeout to at most {}",
            humantime::format_duration(longest)
        ));
    }
    let max_ticks =
        u64::try_from(MAX_ELECTION_TIMEOUT.as_nanos() / heartbeat.as_nanos().max(1)).unwrap_or(0);
    if let Some(enough) =
        (ticks + 1..=max_ticks).find(|t| timeout + heartbeat <= lease(heartbeat, *t))
    {
        fixes.push(format!(
            "raise cluster.election-timeout to at least {} on every member",
            humantime::format_duration(heartbeat * u32::try_from(enough).unwrap_or(u32::MAX))
        ));
    }
    if fixes.is_empty() {
        fixes.push("lower cluster.heartbeat-interval".to_string());
    }
    problems.push(format!(
        "aws.call-timeout = {} does not fit inside the leader's lease: a leader starts no AWS \
         call that could outlast its lease, and with cluster.heartbeat-interval = {} and \
         cluster.election-timeout = {} the lease is {}, so call-timeout plus one heartbeat \
         interval must be at most that; {}",
        humantime::format_duration(timeout),
        humantime::format_duration(heartbeat),
        humantime::format_duration(election),
        humantime::format_duration(lease_now),
        fixes.join(", or "),
    ));
    false
}

/// Handing leadership over is itself a failover: the peer needs up to an election timeout to
/// take over, and then its own time to claim. A leader must be given at least
/// `MIN_HAND_OFF_ELECTION_TIMEOUTS` election timeouts before it gives up, or a slow AWS API
/// would bounce leadership between members faster than any of them could finish.
fn check_hand_off_after(
    after: Duration,
    election_timeout: Option<Duration>,
    problems: &mut Vec<String>,
) -> bool {
    let Some(election) = election_timeout else {
        return true;
    };
    let minimum = election * MIN_HAND_OFF_ELECTION_TIMEOUTS;
    if after >= minimum {
        return true;
    }
    problems.push(format!(
        "aws.hand-off-after = {} is too short for cluster.election-timeout = {}: handing \
         leadership to a peer is itself a failover, so a leader must get at least \
         {MIN_HAND_OFF_ELECTION_TIMEOUTS} election timeouts to put its resources in place before \
         it gives up, or a slow AWS API would bounce leadership between members; raise \
         aws.hand-off-after to at least {} (default {}), or lower cluster.election-timeout",
        humantime::format_duration(after),
        humantime::format_duration(election),
        humantime::format_duration(minimum),
        humantime::format_duration(DEFAULT_HAND_OFF_AFTER),
    ));
    false
}

/// `[[elastic-ip]]` entries: well-formed ids, each allocation listed once.
fn elastic_ip_settings(
    tables: Vec<ElasticIpTable>,
    problems: &mut Vec<String>,
) -> Option<Vec<ElasticIpSettings>> {
    let mut allocation_ids: Vec<Option<String>> = Vec::new();
    let mut entries = Vec::new();
    for (index, table) in tables.into_iter().enumerate() {
        let key = format!("elastic-ip[{index}]");
        let allocation_id = match table.allocation_id {
            None => {
                problems.push(format!(
                    "{key}.allocation-id is required: the Elastic IP's allocation id, e.g. \
                     allocation-id = \"eipalloc-0123456789abcdef0\" (`aws ec2 describe-addresses` \
                     lists them)"
                ));
                None
            }
            Some(text) if text.parse::<std::net::IpAddr>().is_ok() => {
                problems.push(format!(
                    "{key}.allocation-id = {text:?} is an address, not an allocation id: find the \
                     id with `aws ec2 describe-addresses --public-ips {text}` and write it, e.g. \
                     \"eipalloc-0123456789abcdef0\""
                ));
                None
            }
            Some(text) => resource_id(
                &format!("{key}.allocation-id"),
                text,
                "eipalloc-",
                &[],
                "eipalloc-0123456789abcdef0",
                problems,
            ),
        };
        if let Some(id) = &allocation_id {
            if let Some(first) = allocation_ids
                .iter()
                .position(|other| other.as_ref() == Some(id))
            {
                problems.push(format!(
                    "{key}.allocation-id = {id:?} is also the allocation id of \
                     elastic-ip[{first}]: list each Elastic IP once; remove one of them"
                ));
            }
        }
        let network_interface_id = optional(table.network_interface_id, |text| {
            resource_id(
                &format!("{key}.network-interface-id"),
                text,
                "eni-",
                &[],
                "eni-0123456789abcdef0",
                problems,
            )
        });
        let private_ip = optional(table.private_ip, |text| {
            ipv4(&format!("{key}.private-ip"), &text, "10.0.1.10", problems)
        });
        allocation_ids.push(allocation_id.clone());
        entries.push(match (allocation_id, network_interface_id, private_ip) {
            (Some(allocation_id), Some(network_interface_id), Some(private_ip)) => {
                Some(ElasticIpSettings {
                    allocation_id,
                    network_interface_id,
                    private_ip,
                })
            }
            _ => None,
        });
    }
    entries.into_iter().collect()
}

/// `[[route53-record]]` entries. `record_value` is `[node] record-value`: `None` when that key
/// is invalid (already reported), `Some(None)` when it is absent.
fn route53_record_settings(
    tables: Vec<Route53RecordTable>,
    record_value: Option<Option<&str>>,
    problems: &mut Vec<String>,
) -> Option<Vec<Route53RecordSettings>> {
    // (zone, normalised name, type) of every entry so far, for the duplicate checks.
    let mut seen: Vec<(Option<String>, Option<String>, Option<RecordType>)> = Vec::new();
    let mut records = Vec::new();
    for (index, table) in tables.into_iter().enumerate() {
        let key = format!("route53-record[{index}]");
        let zone = match table.hosted_zone_id {
            None => {
                problems.push(format!(
                    "{key}.hosted-zone-id is required: the id of the zone that holds the record, \
                     e.g. hosted-zone-id = \"Z0123456789ABCDEFGHIJ\" (`aws route53 \
                     list-hosted-zones` lists them)"
                ));
                None
            }
            Some(text) => hosted_zone_id(&key, &text, problems),
        };
        let name = match table.name {
            None => {
                problems.push(format!(
                    "{key}.name is required: the record's full name, e.g. name = \
                     \"db.internal.example.com.\""
                ));
                None
            }
            Some(text) => record_name(&key, &text, problems),
        };
        let record_type = match table.record_type {
            None => {
                problems.push(format!(
                    "{key}.type is required: \"A\", \"AAAA\", \"CNAME\" or \"TXT\", e.g. type = \
                     \"A\""
                ));
                None
            }
            Some(text) => RecordType::parse(&text).or_else(|| {
                problems.push(format!(
                    "{key}.type = {text:?} is not a record type ha-agent manages: use \"A\", \
                     \"AAAA\", \"CNAME\" or \"TXT\""
                ));
                None
            }),
        };
        let ttl = table.ttl.unwrap_or(DEFAULT_RECORD_TTL);
        let ttl = (0..=MAX_RECORD_TTL)
            .contains(&ttl)
            .then_some(ttl)
            .or_else(|| {
                problems.push(format!(
                "{key}.ttl = {ttl} is out of range: use 0 to {MAX_RECORD_TTL} seconds (default \
                 {DEFAULT_RECORD_TTL}: keep it short, so that resolvers follow a failover quickly)"
            ));
                None
            });
        let value = match table.value {
            None => {
                problems.push(format!(
                    "{key}.value is required: \"private-ip\" or \"public-ip\" (the leader's \
                     address, type A), or \"node\" (the leader's own [node] record-value)"
                ));
                None
            }
            Some(text) => RecordValue::parse(&text).or_else(|| {
                problems.push(format!(
                    "{key}.value = {text:?} is not a record value: use \"private-ip\" or \
                     \"public-ip\" (the leader's address, type A), or \"node\" (the leader's own \
                     [node] record-value)"
                ));
                None
            }),
        }
        .filter(|value| check_record_value(&key, value, record_type, record_value, problems));
        if let (Some(zone), Some(name), Some(kind)) = (&zone, &name, record_type) {
            check_record_unique(&key, zone, name, kind, &seen, problems);
        }
        seen.push((zone.clone(), name.clone(), record_type));
        records.push(match (zone, name, record_type, ttl, value) {
            (Some(hosted_zone_id), Some(name), Some(record_type), Some(ttl), Some(value)) => {
                Some(Route53RecordSettings {
                    hosted_zone_id,
                    name,
                    record_type,
                    ttl,
                    value,
                })
            }
            _ => None,
        });
    }
    records.into_iter().collect()
}

/// A hosted zone id as Route53 shows it, with or without its `/hostedzone/` prefix; returned
/// bare.
fn hosted_zone_id(key: &str, text: &str, problems: &mut Vec<String>) -> Option<String> {
    let id = text.strip_prefix("/hostedzone/").unwrap_or(text);
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Some(id.to_string());
    }
    let hint = if id.contains('.') {
        format!(
            "; that looks like the zone's name: find its id with `aws route53 \
             list-hosted-zones-by-name --dns-name {id}`"
        )
    } else {
        String::new()
    };
    problems.push(format!(
        "{key}.hosted-zone-id = {text:?} is not a hosted zone id: write the id Route53 gives the \
         zone, upper-case letters and digits, e.g. \"Z0123456789ABCDEFGHIJ\"{hint}"
    ));
    None
}

/// A record name, normalised to lower case with a trailing dot.
fn record_name(key: &str, text: &str, problems: &mut Vec<String>) -> Option<String> {
    let example = "\"db.internal.example.com.\"";
    if text.is_empty() {
        problems.push(format!(
            "{key}.name is empty: write the record's full name, e.g. {example}"
        ));
        return None;
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(format!(
            "{key}.name = {text:?} contains whitespace: write the record's full name, e.g. \
             {example}"
        ));
        return None;
    }
    let mut name = text.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    if name.len() > MAX_RECORD_NAME_LEN {
        problems.push(format!(
            "{key}.name is {} characters long (with its trailing dot): DNS names have at most \
             {MAX_RECORD_NAME_LEN}",
            name.len()
        ));
        return None;
    }
    if name[..name.len() - 1].split('.').any(str::is_empty) {
        problems.push(format!(
            "{key}.name = {text:?} has an empty label ('..' or a leading dot): write the record's \
             full name, e.g. {example}"
        ));
        return None;
    }
    Some(name)
}

/// The rules between a record's value and its type: the node's addresses are IPv4, so
/// "private-ip" and "public-ip" need type A; "node" needs this node's record-value, of the
/// record's address family for A and AAAA.
fn check_record_value(
    key: &str,
    value: &RecordValue,
    record_type: Option<RecordType>,
    record_value: Option<Option<&str>>,
    problems: &mut Vec<String>,
) -> bool {
    match value {
        RecordValue::PrivateIp | RecordValue::PublicIp => match record_type {
            Some(kind) if kind != RecordType::A => {
                problems.push(format!(
                    "{key}.value = \"{}\" requires type = \"A\" (the node's address is IPv4), \
                     but {key}.type = \"{}\": use type = \"A\", or value = \"node\" with every \
                     node's own [node] record-value",
                    value.as_str(),
                    kind.as_str()
                ));
                false
            }
            _ => true,
        },
        RecordValue::Node => match record_value {
            // node.record-value itself is invalid, and reported.
            None => false,
            Some(None) => {
                problems.push(format!(
                    "{key}.value = \"node\" needs node.record-value: the record takes the \
                     leader's own value, so every node must set its own record-value under \
                     [node] (e.g. record-value = \"10.0.1.10\" for type A), each with its own \
                     address"
                ));
                false
            }
            Some(Some(text)) => {
                let family = match record_type {
                    Some(RecordType::A) if text.parse::<Ipv4Addr>().is_err() => {
                        Some(("IPv4", "10.0.1.10"))
                    }
                    Some(RecordType::Aaaa) if text.parse::<Ipv6Addr>().is_err() => {
                        Some(("IPv6", "fd00::10"))
                    }
                    _ => None,
                };
                let Some((family, example)) = family else {
                    return true;
                };
                problems.push(format!(
                    "node.record-value = {text:?} is not an {family} address, but {key} (type \
                     {}, value = \"node\") needs one: set this node's own {family} address, \
                     e.g. record-value = \"{example}\"",
                    record_type.map(RecordType::as_str).unwrap_or_default()
                ));
                false
            }
        },
    }
}

/// Two entries for one (zone, name, type) would fight over one record set; and DNS allows no
/// other record beside a CNAME of the same name.
fn check_record_unique(
    key: &str,
    zone: &str,
    name: &str,
    kind: RecordType,
    seen: &[(Option<String>, Option<String>, Option<RecordType>)],
    problems: &mut Vec<String>,
) {
    for (first, (other_zone, other_name, other_kind)) in seen.iter().enumerate() {
        if other_zone.as_deref() != Some(zone) || other_name.as_deref() != Some(name) {
            continue;
        }
        let Some(other_kind) = *other_kind else {
            continue;
        };
        if other_kind == kind {
            problems.push(format!(
                "{key}.name = {name:?} (type {}, zone {zone}) is also route53-record[{first}]: \
                 two entries would fight over one record; remove one of them",
                kind.as_str()
            ));
            return;
        }
        if kind == RecordType::Cname || other_kind == RecordType::Cname {
            problems.push(format!(
                "{key}.name = {name:?} (type {}, zone {zone}) is also the name of \
                 route53-record[{first}] (type {}), and DNS allows no other record beside a \
                 CNAME of the same name; use another name or remove one of them",
                kind.as_str(),
                other_kind.as_str()
            ));
            return;
        }
    }
}

/// Health and preemption hand-offs are failovers too: the peer needs up to an election timeout
/// to take over. A leader must wait at least `MIN_HAND_OFF_INTERVAL_ELECTION_TIMEOUTS` election
/// timeouts between two of them, or a flapping service would bounce leadership faster than the
/// group settles. `election_timeout` is `None` when the rule does not apply (or that key is
/// invalid, and reported).
fn check_min_hand_off_interval(
    interval: Duration,
    given: bool,
    election_timeout: Option<Duration>,
    problems: &mut Vec<String>,
) -> bool {
    let Some(election) = election_timeout else {
        return true;
    };
    let minimum = election * MIN_HAND_OFF_INTERVAL_ELECTION_TIMEOUTS;
    if interval >= minimum {
        return true;
    }
    let default = if given { "" } else { " (the default)" };
    problems.push(format!(
        "cluster.min-hand-off-interval = {}{default} is too short for cluster.election-timeout = \
         {}: every hand-off for health or preemption is itself a failover, so one leader must \
         wait at least {MIN_HAND_OFF_INTERVAL_ELECTION_TIMEOUTS} election timeouts between two of \
         them, or a flapping service would bounce leadership faster than the group settles; \
         raise cluster.min-hand-off-interval to at least {} (default {}), or lower \
         cluster.election-timeout",
        humantime::format_duration(interval),
        humantime::format_duration(election),
        humantime::format_duration(minimum),
        humantime::format_duration(DEFAULT_MIN_HAND_OFF_INTERVAL),
    ));
    false
}

/// The keys that belong to one check type, each with the type it belongs to.
const CHECK_TYPE_KEYS: [(&str, &str); 5] = [
    ("url", "http"),
    ("expect-status", "http"),
    ("body", "http"),
    ("address", "tcp"),
    ("command", "exec"),
];

/// `[[check]]` entries: unique names, the keys of each entry's type and no others, timing.
fn check_settings(
    tables: Vec<CheckTable>,
    problems: &mut Vec<String>,
) -> Option<Vec<CheckSettings>> {
    let mut names: Vec<Option<String>> = Vec::new();
    let mut checks = Vec::new();
    for (index, table) in tables.into_iter().enumerate() {
        let key = format!("check[{index}]");
        let CheckTable {
            name,
            kind,
            url,
            expect_status,
            body,
            address,
            command,
            interval,
            timeout,
            rise,
            fall,
        } = table;

        let name = check_name(&key, name, problems);
        if let Some(name) = &name {
            if let Some(first) = names.iter().position(|other| other.as_ref() == Some(name)) {
                problems.push(format!(
                    "{key}.name = {name:?} is also the name of check[{first}]: every check needs \
                     its own name (status and logs show it); rename one of them"
                ));
            }
        }
        names.push(name.clone());

        let kind_name = match kind {
            None => {
                problems.push(format!(
                    "{key}.type is required: \"http\", \"tcp\" or \"exec\", e.g. type = \"http\""
                ));
                None
            }
            Some(text) => match text.as_str() {
                "http" => Some("http"),
                "tcp" => Some("tcp"),
                "exec" => Some("exec"),
                _ => {
                    problems.push(format!(
                        "{key}.type = {text:?} is not a check type: use \"http\" (GET a URL), \
                         \"tcp\" (open a connection) or \"exec\" (run a command)"
                    ));
                    None
                }
            },
        };
        // Keys of another type: reported only when the type is known.
        if let Some(kind_name) = kind_name {
            let present = [
                url.is_some(),
                expect_status.is_some(),
                body.is_some(),
                address.is_some(),
                command.is_some(),
            ];
            for ((field, owner), present) in CHECK_TYPE_KEYS.into_iter().zip(present) {
                if present && owner != kind_name {
                    problems.push(format!(
                        "{key}.{field} is only for type = \"{owner}\", but {key}.type = \
                         \"{kind_name}\": remove {field}, or fix the type"
                    ));
                }
            }
        }
        let kind = match kind_name {
            Some("http") => http_check(&key, url, expect_status, body, problems),
            Some("tcp") => match address {
                None => {
                    problems.push(format!(
                        "{key}.address is required for type = \"tcp\": the host:port to connect \
                         to, e.g. address = \"127.0.0.1:5432\""
                    ));
                    None
                }
                Some(text) => tcp_address(&format!("{key}.address"), text, problems)
                    .map(|address| CheckKind::Tcp { address }),
            },
            Some(_) => match command {
                None => {
                    problems.push(format!(
                        "{key}.command is required for type = \"exec\": the program and its \
                         arguments (run without a shell; exit status 0 passes), e.g. command = \
                         [\"/usr/local/bin/check-replica\", \"--max-lag\", \"5\"]"
                    ));
                    None
                }
                Some(argv) => command_argv(
                    &format!("{key}.command"),
                    argv,
                    "command = [\"/usr/local/bin/check-replica\", \"--max-lag\", \"5\"]",
                    problems,
                )
                .map(|command| CheckKind::Exec { command }),
            },
            None => None,
        };

        let interval = duration(
            &format!("{key}.interval"),
            interval,
            DEFAULT_CHECK_INTERVAL,
            problems,
        )
        .filter(|interval| {
            if *interval >= MIN_CHECK_INTERVAL {
                return true;
            }
            problems.push(format!(
                "{key}.interval = {} is too short: probing more often only loads the service; \
                 use at least {} (default {})",
                humantime::format_duration(*interval),
                humantime::format_duration(MIN_CHECK_INTERVAL),
                humantime::format_duration(DEFAULT_CHECK_INTERVAL),
            ));
            false
        });
        let timeout = match timeout {
            // Without a valid interval there is no default, and the interval is reported.
            None => interval.map(|interval| interval / 2),
            Some(text) => duration(
                &format!("{key}.timeout"),
                Some(text),
                DEFAULT_CHECK_INTERVAL / 2,
                problems,
            )
            .filter(|timeout| check_probe_timeout(&key, *timeout, interval, problems)),
        };
        let rise = probe_count(
            &format!("{key}.rise"),
            rise,
            DEFAULT_RISE,
            "consecutive passes before a failing check passes again",
            problems,
        );
        let fall = probe_count(
            &format!("{key}.fall"),
            fall,
            DEFAULT_FALL,
            "consecutive failures before a passing check fails",
            problems,
        );
        checks.push(match (name, kind, interval, timeout, rise, fall) {
            (Some(name), Some(kind), Some(interval), Some(timeout), Some(rise), Some(fall)) => {
                Some(CheckSettings {
                    name,
                    kind,
                    interval,
                    timeout,
                    rise,
                    fall,
                })
            }
            _ => None,
        });
    }
    checks.into_iter().collect()
}

/// A check's name: required, at most 64 of letters, digits, '.', '_' and '-'.
fn check_name(key: &str, name: Option<String>, problems: &mut Vec<String>) -> Option<String> {
    let Some(name) = name else {
        problems.push(format!(
            "{key}.name is required: give each check a short name of its own, shown in status \
             and logs, e.g. name = \"web\""
        ));
        return None;
    };
    if name.is_empty() {
        problems.push(format!(
            "{key}.name is empty: give each check a short name of its own, e.g. name = \"web\""
        ));
        return None;
    }
    label(&format!("{key}.name"), name, MAX_CHECK_NAME_LEN, problems)
}

/// `type = "http"`: a URL, the statuses that pass, and an optional body match.
fn http_check(
    key: &str,
    url: Option<String>,
    expect_status: Option<toml::Value>,
    body: Option<String>,
    problems: &mut Vec<String>,
) -> Option<CheckKind> {
    let url = match url {
        None => {
            problems.push(format!(
                "{key}.url is required for type = \"http\": the URL to GET, e.g. url = \
                 \"http://127.0.0.1:8080/healthz\""
            ));
            None
        }
        Some(text) => check_url(&format!("{key}.url"), text, problems),
    };
    let expect_status = match expect_status {
        None => Some(DEFAULT_EXPECT_STATUS),
        Some(value) => status_range(&format!("{key}.expect-status"), &value, problems),
    };
    let body = optional(body, |body| {
        if body.is_empty() {
            problems.push(format!(
                "{key}.body is empty: every response contains the empty string; write the text a \
                 healthy response contains, e.g. body = \"ok\", or remove the key"
            ));
            return None;
        }
        Some(body)
    });
    Some(CheckKind::Http {
        url: url?,
        expect_status: expect_status?,
        body: body?,
    })
}

/// An `http://` or `https://` URL with a host, kept as written (a query is allowed).
fn check_url(key: &str, text: String, problems: &mut Vec<String>) -> Option<String> {
    let example = "\"http://127.0.0.1:8080/healthz\"";
    let fault = if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace".to_string())
    } else {
        match reqwest::Url::parse(&text) {
            Err(e) => Some(format!("is not a URL ({e})")),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                Some("is not an http:// or https:// URL".to_string())
            }
            Ok(url) if url.host().is_none() => Some("has no host".to_string()),
            Ok(_) => None,
        }
    };
    match fault {
        None => Some(text),
        Some(fault) => {
            problems.push(format!(
                "{key} = {text:?} {fault}: write the http:// or https:// URL to GET, e.g. \
                 {example}"
            ));
            None
        }
    }
}

/// `expect-status`: a status (an integer or a string) or an inclusive range "200-299", of
/// statuses from 100 to 599.
fn status_range(
    key: &str,
    value: &toml::Value,
    problems: &mut Vec<String>,
) -> Option<std::ops::RangeInclusive<u16>> {
    let status = |text: &str| {
        text.trim()
            .parse::<u16>()
            .ok()
            .filter(|code| HTTP_STATUS_CODES.contains(code))
    };
    let range = match value {
        toml::Value::Integer(code) => u16::try_from(*code)
            .ok()
            .filter(|code| HTTP_STATUS_CODES.contains(code))
            .map(|code| code..=code),
        toml::Value::String(text) => match text.split_once('-') {
            None => status(text).map(|code| code..=code),
            Some((low, high)) => match (status(low), status(high)) {
                (Some(low), Some(high)) if low > high => {
                    problems.push(format!(
                        "{key} = {value} is an empty range: write the lower status first, e.g. \
                         \"{high}-{low}\""
                    ));
                    return None;
                }
                (Some(low), Some(high)) => Some(low..=high),
                _ => None,
            },
        },
        _ => None,
    };
    if range.is_none() {
        problems.push(format!(
            "{key} = {value} is not an HTTP status or range of statuses: write one status from \
             {} to {} (e.g. 200) or an inclusive range (e.g. \"200-299\"); default \"{}\"",
            HTTP_STATUS_CODES.start(),
            HTTP_STATUS_CODES.end(),
            status_range_text(&DEFAULT_EXPECT_STATUS),
        ));
    }
    range
}

/// "200-399", or "200" for a single status.
fn status_range_text(range: &std::ops::RangeInclusive<u16>) -> String {
    if range.start() == range.end() {
        range.start().to_string()
    } else {
        format!("{}-{}", range.start(), range.end())
    }
}

/// `type = "tcp"` address: an ip:port, or a host name and a port (resolved at probe time);
/// kept as written.
fn tcp_address(key: &str, text: String, problems: &mut Vec<String>) -> Option<String> {
    let fault = match text.parse::<SocketAddr>() {
        Ok(address) if address.port() == 0 => Some("has port 0"),
        Ok(_) => None,
        Err(_) => match text.rsplit_once(':') {
            None => Some("has no port"),
            Some((host, _)) if host.parse::<Ipv6Addr>().is_ok() => {
                Some("is an IPv6 address without brackets: write it like \"[::1]:5432\"")
            }
            Some((host, port)) => {
                let label_ok = |label: &str| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                };
                let name = host.strip_suffix('.').unwrap_or(host);
                if name.is_empty() {
                    Some("has no host")
                } else if name.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    Some("has no valid IP address")
                } else if !name.split('.').all(label_ok) {
                    Some("has no valid host name")
                } else if !port.parse::<u16>().is_ok_and(|port| port > 0) {
                    Some("has no valid port (1 to 65535)")
                } else {
                    None
                }
            }
        },
    };
    match fault {
        None => Some(text),
        Some(fault) => {
            problems.push(format!(
                "{key} = {text:?} is not host:port ({fault}): write an address or host name and \
                 a port, e.g. \"127.0.0.1:5432\", \"[::1]:5432\" or \"db.internal:5432\""
            ));
            None
        }
    }
}

/// A command line, run without a shell: non-empty, `argv[0]` an absolute path, no NUL bytes.
/// `example` is a whole assignment for the messages.
fn command_argv(
    key: &str,
    argv: Vec<String>,
    example: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<String>> {
    let Some(program) = argv.first() else {
        problems.push(format!(
            "{key} is empty: give the program and its arguments (run without a shell), e.g. \
             {example}"
        ));
        return None;
    };
    if program.is_empty() {
        problems.push(format!(
            "{key}[0] is empty: the first element is the program to run, as an absolute path, \
             e.g. {example}"
        ));
        return None;
    }
    if !Path::new(program).is_absolute() {
        let bare = program.rsplit('/').next().unwrap_or(program);
        problems.push(format!(
            "{key}[0] = {program:?} is not an absolute path: commands run without a shell and \
             without a PATH search; write the program's full path (`command -v {bare}` shows \
             it), e.g. {example}"
        ));
        return None;
    }
    if let Some(index) = argv.iter().position(|arg| arg.contains('\0')) {
        problems.push(format!(
            "{key}[{index}] contains a NUL character, which no command line can carry; remove it"
        ));
        return None;
    }
    Some(argv)
}

/// A command line for display: arguments separated by spaces, quoted when they need it.
fn argv_text(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            if !arg.is_empty()
                && !arg
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\''))
            {
                arg.clone()
            } else {
                format!("{arg:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A probe's timeout: non-zero, and shorter than the interval (when that one is valid).
fn check_probe_timeout(
    key: &str,
    timeout: Duration,
    interval: Option<Duration>,
    problems: &mut Vec<String>,
) -> bool {
    if timeout.is_zero() {
        problems.push(format!(
            "{key}.timeout = 0s: every probe would fail at once; use a positive duration shorter \
             than {key}.interval, or remove it (default: half the interval)"
        ));
        return false;
    }
    let Some(interval) = interval else {
        return true;
    };
    if timeout < interval {
        return true;
    }
    problems.push(format!(
        "{key}.timeout = {} is not shorter than {key}.interval = {}: a probe must end before \
         the next one starts; lower {key}.timeout (default: half the interval, {}) or raise \
         {key}.interval",
        humantime::format_duration(timeout),
        humantime::format_duration(interval),
        humantime::format_duration(interval / 2),
    ));
    false
}

/// `rise` or `fall`: 1 to 100.
fn probe_count(
    key: &str,
    value: Option<i64>,
    default: u32,
    meaning: &str,
    problems: &mut Vec<String>,
) -> Option<u32> {
    let value = value.unwrap_or(i64::from(default));
    match u32::try_from(value) {
        Ok(count) if (1..=MAX_RISE_FALL).contains(&count) => Some(count),
        _ => {
            problems.push(format!(
                "{key} = {value} is out of range: use 1 to {MAX_RISE_FALL} ({meaning}; default \
                 {default})"
            ));
            None
        }
    }
}

/// `[hooks]`: each hook a command line, and one timeout for all.
fn hook_settings(hooks: HooksTable, problems: &mut Vec<String>) -> Option<HookSettings> {
    let mut hook = |key: &str, role: &str, argv: Option<Vec<String>>| {
        optional(argv, |argv| {
            command_argv(
                &format!("hooks.{key}"),
                argv,
                &format!("{key} = [\"/usr/local/bin/notify\", \"{role}\"]"),
                problems,
            )
        })
    };
    let on_leader = hook("on-leader", "leader", hooks.on_leader);
    let on_follower = hook("on-follower", "follower", hooks.on_follower);
    let on_fault = hook("on-fault", "fault", hooks.on_fault);
    let timeout = duration(
        "hooks.timeout",
        hooks.timeout,
        DEFAULT_HOOK_TIMEOUT,
        problems,
    )
    .filter(|timeout| {
        if (MIN_HOOK_TIMEOUT..=MAX_HOOK_TIMEOUT).contains(timeout) {
            return true;
        }
        problems.push(format!(
            "hooks.timeout = {} is out of range: use {} to {} (default {}); a hook still running \
             then is killed",
            humantime::format_duration(*timeout),
            humantime::format_duration(MIN_HOOK_TIMEOUT),
            humantime::format_duration(MAX_HOOK_TIMEOUT),
            humantime::format_duration(DEFAULT_HOOK_TIMEOUT),
        ));
        false
    });
    Some(HookSettings {
        on_leader: on_leader?,
        on_follower: on_follower?,
        on_fault: on_fault?,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SHIPPED: &str = include_str!("../../packaging/ha-agent.toml");
    const SHIPPED_SECRET_FILE: &str = "/etc/ha-agent/cluster.key";
    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NQ==";
    /// An `[aws]` table that gives this node's whole identity (no IMDS needed).
    const IDENTITY: &str = "\n[aws]\nregion = \"us-east-1\"\n\
                            instance-id = \"i-0123456789abcdef0\"\n\
                            network-interface-id = \"eni-0123456789abcdef0\"\n\
                            private-ip = \"10.0.1.10\"\n";
    /// One resource of each kind, appended to the fixture by [`Fixture::with_resources`].
    const RESOURCES: &str = r#"
[[elastic-ip]]
allocation-id = "eipalloc-0123456789abcdef0"

[[route53-record]]
hosted-zone-id = "Z0123456789ABCDEFGHIJ"
name = "db.internal.example.com."
type = "A"
value = "private-ip"
"#;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ha-agent-config-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .expect("create file");
            std::io::Write::write_all(&mut file, contents.as_bytes()).expect("write file");
            // The umask may have cleared bits the test asked for.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A temp dir holding a valid key file (`cluster.key`, mode 0600) and the config path.
    struct Fixture {
        dir: TempDir,
        secret: PathBuf,
        config: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = TempDir::new();
            let secret = dir.write("cluster.key", &format!("{KEY}\n"), 0o600);
            let config = dir.0.join("ha-agent.toml");
            Fixture {
                dir,
                secret,
                config,
            }
        }

        /// A valid three-voter configuration using this fixture's key file.
        fn valid(&self) -> String {
            format!(
                r#"
[cluster]
name = "web"
secret-file = "{}"

[node]
id = 1
listen = "10.0.1.10:7946"

[[peer]]
id = 2
address = "10.0.1.11:7946"

[[peer]]
id = 3
address = "10.0.1.12:7946"
role = "witness"
"#,
                self.secret.display()
            )
        }

        /// The valid configuration plus one Elastic IP and one Route53 record.
        fn with_resources(&self) -> String {
            format!("{}{RESOURCES}", self.valid())
        }

        /// The valid configuration with these `[[route53-record]]` bodies (and no Elastic IP).
        fn with_records(&self, records: &[&str]) -> String {
            let mut text = self.valid();
            for record in records {
                text.push_str(&format!("\n[[route53-record]]\n{record}\n"));
            }
            text
        }

        fn load(&self, text: &str) -> Result<Settings, ConfigErrors> {
            Settings::from_toml_str(&self.config, text)
        }

        fn problems(&self, text: &str) -> Vec<String> {
            match self.load(text) {
                Ok(settings) => panic!("expected problems, got {settings:#?}"),
                Err(errors) => errors.problems,
            }
        }
    }

    /// Asserts that some problem contains every one of `needles`.
    fn assert_problem(problems: &[String], needles: &[&str]) {
        assert!(
            problems
                .iter()
                .any(|p| needles.iter().all(|needle| p.contains(needle))),
            "no problem mentions all of {needles:?}; problems:\n{problems:#?}"
        );
    }

    fn replace(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "fixture does not contain {from:?}");
        text.replacen(from, to, 1)
    }

    /// The key file and key bytes of settings whose secret comes from a file.
    fn file_secret(settings: &Settings) -> (&Path, &[u8]) {
        match &settings.cluster.secret {
            SecretSource::File { path, secret } => (path, secret.as_bytes()),
            other => panic!("expected a secret file, got {other:?}"),
        }
    }

    #[test]
    fn shipped_example_parses_with_the_file_schema() {
        let file: FileSchema = toml::from_str(SHIPPED).expect("packaging/ha-agent.toml parses");
        assert_eq!(file.cluster.name.as_deref(), Some("web"));
        assert_eq!(
            file.cluster.secret_file.as_deref(),
            Some(Path::new(SHIPPED_SECRET_FILE))
        );
        assert!(file.peer.len() >= 2, "the example lists its peers");
        // A fresh install needs no service: checks and hooks are shown commented out only.
        assert!(file.check.is_empty(), "the example has no active [[check]]");
        let hooks = &file.hooks;
        assert!(
            hooks.on_leader.is_none()
                && hooks.on_follower.is_none()
                && hooks.on_fault.is_none()
                && hooks.timeout.is_none(),
            "the example has no active hook"
        );
        assert_eq!(file.cluster.preempt, None);
    }

    #[test]
    fn shipped_example_validates_with_a_real_secret_file() {
        let fixture = Fixture::new();
        let text = replace(
            SHIPPED,
            &format!("\"{SHIPPED_SECRET_FILE}\""),
            &format!("\"{}\"", fixture.secret.display()),
        );
        let settings = fixture.load(&text).expect("the shipped example validates");
        assert_eq!(
            settings.cluster.heartbeat_interval,
            DEFAULT_HEARTBEAT_INTERVAL
        );
        assert_eq!(settings.cluster.election_timeout, DEFAULT_ELECTION_TIMEOUT);
        assert_eq!(settings.node.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(settings.status.socket, Path::new(DEFAULT_STATUS_SOCKET));
        assert_eq!(file_secret(&settings).1, KEY.as_bytes());
        assert_eq!(settings.aws.call_timeout, DEFAULT_CALL_TIMEOUT);
        let eips: Vec<_> = settings
            .elastic_ips
            .iter()
            .map(|eip| eip.allocation_id.as_str())
            .collect();
        assert_eq!(eips, ["eipalloc-0123456789abcdef0"]);
        let records: Vec<_> = settings
            .route53_records
            .iter()
            .map(|r| {
                (
                    r.hosted_zone_id.as_str(),
                    r.name.as_str(),
                    r.record_type,
                    r.ttl,
                )
            })
            .collect();
        assert_eq!(
            records,
            [(
                "Z0123456789ABCDEFGHIJ",
                "db.internal.example.com.",
                RecordType::A,
                10
            )]
        );
        assert!(settings.checks.is_empty());
        assert!(settings.hooks.configured().next().is_none());
        assert_eq!(settings.hooks.timeout, DEFAULT_HOOK_TIMEOUT);
        assert!(!settings.cluster.preempt);
        assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
    }

    /// The part of the shipped example from its first check on, with the commented-out
    /// `[[check]]` tables and hook keys switched on (lines such as `#name = ...` and
    /// `#[[check]]`; prose comments start with "# " and stay).
    fn shipped_with_checks_and_hooks() -> String {
        let start = SHIPPED
            .find("\n#[[check]]")
            .expect("the example shows a [[check]]");
        let (head, tail) = SHIPPED.split_at(start);
        let tail: Vec<&str> = tail
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => {
                    rest
                }
                _ => line,
            })
            .collect();
        format!("{head}{}\n", tail.join("\n"))
    }

    #[test]
    fn shipped_example_checks_and_hooks_validate_when_uncommented() {
        let fixture = Fixture::new();
        let text = replace(
            &shipped_with_checks_and_hooks(),
            &format!("\"{SHIPPED_SECRET_FILE}\""),
            &format!("\"{}\"", fixture.secret.display()),
        );
        let settings = fixture
            .load(&text)
            .expect("the example's checks and hooks validate");
        let checks: Vec<_> = settings
            .checks
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.kind.clone(),
                    c.interval,
                    c.timeout,
                    c.rise,
                    c.fall,
                )
            })
            .collect();
        let (second, half) = (Duration::from_secs(1), Duration::from_millis(500));
        assert_eq!(
            checks,
            [
                (
                    "web",
                    CheckKind::Http {
                        url: "http://127.0.0.1:8080/healthz".to_string(),
                        expect_status: 200..=399,
                        body: Some("ok".to_string()),
                    },
                    second,
                    half,
                    2,
                    3
                ),
                (
                    "db-port",
                    CheckKind::Tcp {
                        address: "127.0.0.1:5432".to_string()
                    },
                    second,
                    half,
                    2,
                    3
                ),
                (
                    "replication",
                    CheckKind::Exec {
                        command: vec![
                            "/usr/local/bin/check-replica".to_string(),
                            "--max-lag".to_string(),
                            "5".to_string()
                        ]
                    },
                    second,
                    half,
                    2,
                    3
                ),
            ]
        );
        let notify = |role: &str| Some(vec!["/usr/local/bin/notify".to_string(), role.to_string()]);
        assert_eq!(settings.hooks.on_leader, notify("leader"));
        assert_eq!(settings.hooks.on_follower, notify("follower"));
        assert_eq!(settings.hooks.on_fault, notify("fault"));
        assert_eq!(settings.hooks.timeout, Duration::from_secs(10));
    }

    #[test]
    fn shipped_example_mentions_every_key() {
        for key in [
            "name",
            "secret-file",
            "heartbeat-interval",
            "election-timeout",
            "id",
            "listen",
            "state-dir",
            "role",
            "priority",
            "address",
            "socket",
            "secret-ssm-parameter",
            "record-value",
            "region",
            "instance-id",
            "network-interface-id",
            "private-ip",
            "public-ip",
            "imds-endpoint",
            "endpoint-url",
            "leader-parameter",
            "call-timeout",
            "reconcile-interval",
            "hand-off-after",
            "allocation-id",
            "hosted-zone-id",
            "type",
            "ttl",
            "value",
        ] {
            assert!(
                SHIPPED.contains(&format!("{key} =")),
                "packaging/ha-agent.toml does not show {key}"
            );
        }
        // Optional keys of [cluster], [[check]] and [hooks]: shown commented out, with their
        // default or an example.
        for key in [
            "preempt",
            "preempt-delay",
            "min-hand-off-interval",
            "name",
            "type",
            "url",
            "expect-status",
            "body",
            "address",
            "command",
            "interval",
            "timeout",
            "rise",
            "fall",
            "on-leader",
            "on-follower",
            "on-fault",
        ] {
            assert!(
                SHIPPED
                    .lines()
                    .any(|line| line.starts_with(&format!("#{key} ="))),
                "packaging/ha-agent.toml does not show {key} commented out"
            );
        }
        assert!(SHIPPED.contains("\n#[[check]]\n"));
        assert!(SHIPPED.contains("\n[hooks]\n"));
        let file: FileSchema = toml::from_str(&shipped_with_checks_and_hooks()).unwrap();
        let types: Vec<_> = file
            .check
            .iter()
            .filter_map(|c| c.kind.as_deref())
            .collect();
        assert_eq!(types, ["http", "tcp", "exec"], "one example of each type");
    }

    #[test]
    fn valid_three_member_config_loads_with_defaults() {
        let fixture = Fixture::new();
        let settings = fixture.load(&fixture.valid()).expect("valid config");
        assert_eq!(settings.config_path, fixture.config);
        assert_eq!(settings.cluster.name, "web");
        assert_eq!(
            file_secret(&settings),
            (fixture.secret.as_path(), KEY.as_bytes())
        );
        assert_eq!(
            settings.cluster.heartbeat_interval,
            Duration::from_millis(100)
        );
        assert_eq!(settings.cluster.election_timeout, Duration::from_secs(1));
        assert_eq!(settings.cluster.election_ticks(), 10);
        assert_eq!(settings.node.id, 1);
        assert_eq!(settings.node.listen, "10.0.1.10:7946".parse().unwrap());
        assert_eq!(settings.node.state_dir, Path::new("/var/lib/ha-agent"));
        assert_eq!(settings.node.role, MemberRole::Voter);
        assert_eq!(settings.node.priority, 100);
        let peers: Vec<_> = settings
            .peers
            .iter()
            .map(|p| (p.id, p.address.to_string(), p.role))
            .collect();
        assert_eq!(
            peers,
            [
                (2, "10.0.1.11:7946".to_string(), MemberRole::Voter),
                (3, "10.0.1.12:7946".to_string(), MemberRole::Witness),
            ]
        );
        assert_eq!(
            settings.status.socket,
            Path::new("/run/ha-agent/status.sock")
        );
        assert_eq!(settings.node.record_value, None);
        let aws = &settings.aws;
        assert_eq!(aws.region, None);
        assert_eq!(aws.instance_id, None);
        assert_eq!(aws.network_interface_id, None);
        assert_eq!(aws.private_ip, None);
        assert_eq!(aws.public_ip, None);
        assert_eq!(aws.imds_endpoint, "http://169.254.169.254");
        assert_eq!(aws.endpoint_url, None);
        assert_eq!(aws.leader_parameter, None);
        assert_eq!(aws.call_timeout, Duration::from_millis(500));
        assert_eq!(aws.reconcile_interval, Duration::from_secs(10));
        assert_eq!(aws.hand_off_after, Duration::from_secs(30));
        assert!(settings.elastic_ips.is_empty());
        assert!(settings.route53_records.is_empty());
        assert!(!settings.uses_aws());
        assert!(!settings.needs_imds());
        assert!(!settings.cluster.preempt);
        assert_eq!(settings.cluster.preempt_delay, Duration::from_secs(60));
        assert_eq!(
            settings.cluster.min_hand_off_interval,
            Duration::from_secs(30)
        );
        assert!(settings.checks.is_empty());
        assert_eq!(settings.hooks.on_leader, None);
        assert_eq!(settings.hooks.on_follower, None);
        assert_eq!(settings.hooks.on_fault, None);
        assert_eq!(settings.hooks.timeout, Duration::from_secs(10));
        // The fixture moves nothing, which is the one thing worth a warning.
        let warnings = settings.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_problem(&warnings, &["[[elastic-ip]]", "move nothing"]);
    }

    #[test]
    fn load_reads_the_file() {
        let fixture = Fixture::new();
        let path = fixture.dir.write("ha-agent.toml", &fixture.valid(), 0o640);
        let settings = Settings::load(&path).expect("valid config file");
        assert_eq!(settings.config_path, path);
        assert_eq!(settings.node.id, 1);
    }

    /// The fixture with this node a witness and peer 3 a voter (two members may lead).
    fn witness_node(fixture: &Fixture, node_extra: &str) -> String {
        let text = replace(&fixture.valid(), "role = \"witness\"", "role = \"voter\"");
        replace(
            &text,
            "id = 1\n",
            &format!("id = 1\nrole = \"witness\"\n{node_extra}"),
        )
    }

    #[test]
    fn witness_node_defaults_to_priority_zero() {
        let fixture = Fixture::new();
        let settings = fixture
            .load(&witness_node(&fixture, ""))
            .expect("valid witness config");
        assert_eq!(settings.node.role, MemberRole::Witness);
        assert_eq!(settings.node.priority, 0);
        let settings = fixture
            .load(&witness_node(&fixture, "priority = 0\n"))
            .expect("explicit zero priority");
        assert_eq!(settings.node.priority, 0);
    }

    #[test]
    fn witness_with_positive_priority_is_rejected() {
        let fixture = Fixture::new();
        let problems = fixture.problems(&witness_node(&fixture, "priority = 5\n"));
        assert_problem(
            &problems,
            &[
                "node.priority = 5",
                "a witness never keeps leadership",
                "set node.priority = 0 or remove it",
            ],
        );
    }

    #[test]
    fn priority_out_of_range_is_rejected() {
        let fixture = Fixture::new();
        for priority in ["-1", "1001"] {
            let text = replace(
                &fixture.valid(),
                "id = 1\n",
                &format!("id = 1\npriority = {priority}\n"),
            );
            assert_problem(&fixture.problems(&text), &["node.priority", "0 to 1000"]);
        }
    }

    #[test]
    fn missing_config_file_names_the_path_and_os_error() {
        let dir = TempDir::new();
        let path = dir.0.join("absent.toml");
        let errors = Settings::load(&path).unwrap_err();
        assert_eq!(errors.path, path);
        assert_problem(
            &errors.problems,
            &[&path.display().to_string(), "No such file or directory"],
        );
    }

    #[test]
    fn syntax_error_reports_the_line() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 2\n", "id = = 2\n");
        assert_problem(&fixture.problems(&text), &["line 11", "column 6"]);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 2\n", "id = 2\nweight = 3\n");
        assert_problem(
            &fixture.problems(&text),
            &["unknown field", "weight", "line 12"],
        );
        let text = replace(&fixture.valid(), "[node]", "[nodes]");
        assert_problem(
            &fixture.problems(&text),
            &["unknown field", "nodes", "line"],
        );
    }

    #[test]
    fn unknown_role_is_rejected() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            "role = \"witness\"",
            "role = \"observer\"",
        );
        assert_problem(
            &fixture.problems(&text),
            &["observer", "voter", "witness", "line"],
        );
    }

    #[test]
    fn missing_required_keys_are_all_reported() {
        let fixture = Fixture::new();
        let problems = fixture.problems("[[peer]]\nid = 2\n");
        assert_problem(&problems, &["cluster.name is required"]);
        assert_problem(
            &problems,
            &[
                "cluster.secret-file (or cluster.secret-ssm-parameter) is required",
                "head -c 32 /dev/urandom",
                "secret-ssm-parameter = \"/ha-agent/web/key\"",
            ],
        );
        assert_problem(&problems, &["node.id is required"]);
        assert_problem(&problems, &["node.listen is required"]);
        assert_problem(&problems, &["peer[0].address is required"]);
        assert_problem(&problems, &["two voters cannot fail over"]);
    }

    #[test]
    fn cluster_name_must_be_a_short_label() {
        let fixture = Fixture::new();
        let cases = [
            ("\"\"", "is empty"),
            ("\"web servers\"", "' '"),
            ("\"web/1\"", "'/'"),
            (&format!("\"{}\"", "a".repeat(65)), "at most 64"),
        ];
        for (value, needle) in cases {
            let text = replace(&fixture.valid(), "\"web\"", value);
            assert_problem(&fixture.problems(&text), &["cluster.name", needle]);
        }
        let text = replace(&fixture.valid(), "\"web\"", "\"web-1.prod_eu\"");
        assert!(fixture.load(&text).is_ok());
    }

    #[test]
    fn zero_and_negative_ids_are_rejected() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 1\n", "id = 0\n");
        assert_problem(&fixture.problems(&text), &["node.id = 0", "positive"]);
        let text = replace(&fixture.valid(), "id = 2\n", "id = -2\n");
        assert_problem(&fixture.problems(&text), &["peer[0].id = -2", "positive"]);
    }

    #[test]
    fn peer_with_this_nodes_id_is_rejected() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 2\n", "id = 1\n");
        let problems = fixture.problems(&text);
        assert_problem(
            &problems,
            &[
                "peer[0].id",
                "this node (id 1) is listed among its own peers at peer[0]",
                "remove that [[peer]] entry",
            ],
        );
    }

    #[test]
    fn peer_with_this_nodes_address_is_rejected() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "\"10.0.1.11:7946\"", "\"10.0.1.10:7946\"");
        assert_problem(
            &fixture.problems(&text),
            &["peer[0].address", "listed among its own peers at peer[0]"],
        );
    }

    #[test]
    fn duplicate_peer_ids_and_addresses_name_both_entries() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 3\n", "id = 2\n");
        assert_problem(&fixture.problems(&text), &["peer[1].id", "peer[0]"]);
        let text = replace(&fixture.valid(), "\"10.0.1.12:7946\"", "\"10.0.1.11:7946\"");
        assert_problem(&fixture.problems(&text), &["peer[1].address", "peer[0]"]);
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        let fixture = Fixture::new();
        let cases = [
            (
                "\"10.0.1.10:7946\"",
                "\"db1:7946\"",
                "node.listen",
                "not an ip:port",
            ),
            (
                "\"10.0.1.10:7946\"",
                "\"10.0.1.10\"",
                "node.listen",
                "not an ip:port",
            ),
            (
                "\"10.0.1.10:7946\"",
                "\"10.0.1.10:0\"",
                "node.listen",
                "port 0",
            ),
            (
                "\"10.0.1.10:7946\"",
                "\"0.0.0.0:7946\"",
                "node.listen",
                "private IP",
            ),
            (
                "\"10.0.1.10:7946\"",
                "\"[::]:7946\"",
                "node.listen",
                "unspecified",
            ),
            (
                "\"10.0.1.11:7946\"",
                "\"0.0.0.0:7946\"",
                "peer[0].address",
                "unspecified",
            ),
            (
                "\"10.0.1.11:7946\"",
                "\"10.0.1.11:0\"",
                "peer[0].address",
                "port 0",
            ),
            (
                "\"10.0.1.12:7946\"",
                "\"db3\"",
                "peer[1].address",
                "not an ip:port",
            ),
            (
                "\"10.0.1.12:7946\"",
                "\"224.0.0.1:7946\"",
                "peer[1].address",
                "multicast",
            ),
        ];
        for (from, to, key, needle) in cases {
            let text = replace(&fixture.valid(), from, to);
            assert_problem(&fixture.problems(&text), &[key, needle]);
        }
        let text = replace(
            &fixture.valid(),
            "\"10.0.1.11:7946\"",
            "\"[fd00::11]:7946\"",
        );
        assert!(fixture.load(&text).is_ok(), "IPv6 peers are fine");
    }

    #[test]
    fn two_voters_are_rejected() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            "[[peer]]\nid = 3\naddress = \"10.0.1.12:7946\"\nrole = \"witness\"\n",
            "",
        );
        assert_problem(
            &fixture.problems(&text),
            &[
                "two voters cannot fail over",
                "add a third instance or a witness (role = \"witness\")",
            ],
        );
    }

    #[test]
    fn self_listing_does_not_count_as_a_member() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 3\n", "id = 1\n");
        assert_problem(&fixture.problems(&text), &["two voters cannot fail over"]);
    }

    #[test]
    fn more_than_seven_members_are_rejected() {
        let fixture = Fixture::new();
        let mut text = fixture.valid();
        for id in 4..=8 {
            text.push_str(&format!(
                "\n[[peer]]\nid = {id}\naddress = \"10.0.1.{id}:7946\"\n"
            ));
        }
        assert_problem(
            &fixture.problems(&text),
            &["8 members", "more than 7", "slow elections"],
        );
        let seven = text.rsplit_once("\n[[peer]]").unwrap().0;
        assert!(fixture.load(seven).is_ok(), "seven members are fine");
    }

    #[test]
    fn fewer_than_two_members_that_may_lead_are_rejected() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "id = 2\n", "id = 2\nrole = \"witness\"\n");
        assert_problem(
            &fixture.problems(&text),
            &["peer[i].role", "nobody to fail over to"],
        );
    }

    #[test]
    fn durations_are_checked() {
        let fixture = Fixture::new();
        let with = |extra: &str| replace(&fixture.valid(), "[node]", &format!("{extra}\n[node]"));
        let cases = [
            (
                "heartbeat-interval = \"100\"",
                "cluster.heartbeat-interval",
                "not a duration",
            ),
            (
                "heartbeat-interval = \"5ms\"",
                "cluster.heartbeat-interval",
                "10ms to 10s",
            ),
            (
                "heartbeat-interval = \"11s\"",
                "cluster.heartbeat-interval",
                "10ms to 10s",
            ),
            (
                "election-timeout = \"soon\"",
                "cluster.election-timeout",
                "not a duration",
            ),
            (
                "election-timeout = \"400ms\"",
                "cluster.election-timeout",
                "at least 5 heartbeat",
            ),
            (
                "election-timeout = \"61s\"",
                "cluster.election-timeout",
                "at most 1m",
            ),
        ];
        for (extra, key, needle) in cases {
            assert_problem(&fixture.problems(&with(extra)), &[key, needle]);
        }
        let problems = fixture.problems(&with("election-timeout = \"400ms\""));
        assert_problem(&problems, &["1s is comfortable"]);

        let settings = fixture
            .load(&with(
                "heartbeat-interval = \"50ms\"\nelection-timeout = \"250ms\"",
            ))
            .expect("five ticks is the minimum");
        assert_eq!(settings.cluster.election_ticks(), 5);
        let settings = fixture
            .load(&with("election-timeout = \"1050ms\""))
            .expect("not a multiple, rounded down");
        assert_eq!(settings.cluster.election_ticks(), 10);
        assert_problem(
            &settings.warnings(),
            &["cluster.election-timeout", "10 ticks"],
        );
    }

    #[test]
    fn missing_secret_file_is_rejected_with_the_os_error() {
        let fixture = Fixture::new();
        let text = replace(&fixture.valid(), "cluster.key", "absent.key");
        assert_problem(
            &fixture.problems(&text),
            &[
                "cluster.secret-file",
                "absent.key",
                "No such file or directory",
                "head -c 32 /dev/urandom | base64 >",
            ],
        );
    }

    #[test]
    fn secret_file_must_be_a_regular_file() {
        let fixture = Fixture::new();
        fs::create_dir(fixture.dir.0.join("keys")).unwrap();
        let text = replace(&fixture.valid(), "cluster.key", "keys");
        assert_problem(
            &fixture.problems(&text),
            &["cluster.secret-file", "a directory"],
        );
    }

    #[test]
    fn world_readable_secret_file_is_rejected() {
        let fixture = Fixture::new();
        fs::set_permissions(&fixture.secret, fs::Permissions::from_mode(0o644)).unwrap();
        assert_problem(
            &fixture.problems(&fixture.valid()),
            &["cluster.secret-file", "world-readable", "chmod o-r", "0640"],
        );
    }

    #[test]
    fn short_secret_is_rejected() {
        let fixture = Fixture::new();
        fixture.dir.write("cluster.key", "  short-key\n\n", 0o600);
        assert_problem(
            &fixture.problems(&fixture.valid()),
            &[
                "cluster.secret-file",
                "only 9 bytes",
                "at least 16",
                "/dev/urandom",
            ],
        );
    }

    #[test]
    fn relative_secret_file_is_resolved_against_the_config_directory() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            &format!("\"{}\"", fixture.secret.display()),
            "\"cluster.key\"",
        );
        let settings = fixture.load(&text).expect("relative secret file");
        assert_eq!(
            file_secret(&settings),
            (fixture.secret.as_path(), KEY.as_bytes())
        );
    }

    #[test]
    fn state_dir_and_socket_must_be_absolute() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            "id = 1\n",
            "id = 1\nstate-dir = \"var/lib\"\n",
        );
        let text = format!("{text}\n[status]\nsocket = \"status.sock\"\n");
        let problems = fixture.problems(&text);
        assert_problem(&problems, &["node.state-dir", "absolute path"]);
        assert_problem(&problems, &["status.socket", "absolute path"]);
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let fixture = Fixture::new();
        fs::set_permissions(&fixture.secret, fs::Permissions::from_mode(0o604)).unwrap();
        let text = replace(&fixture.valid(), "\"web\"", "\"web farm\"");
        let text = replace(&text, "id = 2\n", "id = 0\n");
        let text = replace(&text, "[node]", "election-timeout = \"100ms\"\n[node]");
        let errors = fixture.load(&text).unwrap_err();
        assert_problem(&errors.problems, &["cluster.name"]);
        assert_problem(&errors.problems, &["world-readable"]);
        assert_problem(&errors.problems, &["peer[0].id"]);
        assert_problem(&errors.problems, &["cluster.election-timeout"]);
        assert_eq!(errors.problems.len(), 4, "{errors}");
        let shown = errors.to_string();
        assert!(
            shown.starts_with(&format!("{}: 4 problems:\n  - ", fixture.config.display())),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 5, "one line per problem:\n{shown}");
    }

    #[test]
    fn multi_line_toml_errors_are_indented_under_their_bullet() {
        let fixture = Fixture::new();
        let errors = fixture
            .load("[node]\nid = 1\ncolour = \"blue\"\n")
            .unwrap_err();
        let shown = errors.to_string();
        assert!(shown.contains(": 1 problem:\n  - "), "{shown}");
        assert!(
            shown.lines().skip(2).all(|line| line.starts_with("    ")),
            "{shown}"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let fixture = Fixture::new();
        let settings = fixture.load(&fixture.valid()).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains(&KEY[..8]), "{shown}");
        let SecretSource::File { secret, .. } = &settings.cluster.secret else {
            panic!("expected a secret file");
        };
        assert_eq!(
            format!("{secret:?}"),
            format!("Secret(<{} bytes, redacted>)", KEY.len())
        );
    }

    #[test]
    fn status_socket_is_found_without_the_secret_file() {
        let dir = TempDir::new();
        let text = "[cluster]\nname = \"web\"\nsecret-file = \"/nonexistent/key\"\n\
                    [node]\nid = 0\nrecord-value = 7\n[aws]\ncall-timeout = \"1ms\"\n\
                    [[elastic-ip]]\nallocation-id = \"nope\"\n\
                    [[route53-record]]\nname = \"\"\n";
        let path = dir.write("default.toml", text, 0o640);
        assert_eq!(
            status_socket_from_file(&path).unwrap(),
            Path::new(DEFAULT_STATUS_SOCKET)
        );
        let text = format!("{text}[status]\nsocket = \"/tmp/ha.sock\"\n");
        let path = dir.write("custom.toml", &text, 0o640);
        assert_eq!(
            status_socket_from_file(&path).unwrap(),
            Path::new("/tmp/ha.sock")
        );
    }

    #[test]
    fn status_socket_from_file_reports_problems() {
        let dir = TempDir::new();
        let path = dir.write("relative.toml", "[status]\nsocket = \"s.sock\"\n", 0o640);
        let errors = status_socket_from_file(&path).unwrap_err();
        assert_problem(&errors.problems, &["status.socket", "absolute path"]);
        let path = dir.write("typo.toml", "[status]\nsockett = \"/s.sock\"\n", 0o640);
        let errors = status_socket_from_file(&path).unwrap_err();
        assert_problem(&errors.problems, &["unknown field", "sockett", "line 2"]);
        let errors = status_socket_from_file(&dir.0.join("absent.toml")).unwrap_err();
        assert_problem(
            &errors.problems,
            &["absent.toml", "No such file or directory"],
        );
    }

    #[test]
    fn world_writable_config_file_is_a_warning() {
        let fixture = Fixture::new();
        let path = fixture.dir.write("ha-agent.toml", &fixture.valid(), 0o666);
        let settings = Settings::load(&path).expect("still valid");
        assert_problem(&settings.warnings(), &["world-writable", "chmod o-w"]);
    }

    #[test]
    fn summary_shows_the_group() {
        let fixture = Fixture::new();
        let summary = fixture.load(&fixture.valid()).unwrap().summary();
        for needle in [
            "web",
            "id 1, voter, priority 100, listening on 10.0.1.10:7946",
            "/var/lib/ha-agent",
            "/run/ha-agent/status.sock",
            "heartbeat every 100ms, election timeout 1s (10 ticks)",
            "10.0.1.11:7946",
            "10.0.1.12:7946",
            "witness",
            "3 voters",
            "1 member(s) may fail",
        ] {
            assert!(
                summary.contains(needle),
                "summary lacks {needle:?}:\n{summary}"
            );
        }
        assert!(!summary.contains(KEY), "{summary}");
    }
    #[test]
    fn ssm_secret_needs_no_secret_file() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            &format!("secret-file = \"{}\"", fixture.secret.display()),
            "secret-ssm-parameter = \"/ha-agent/web/key\"",
        );
        fs::remove_file(&fixture.secret).unwrap();
        let settings = fixture
            .load(&text)
            .expect("an SSM secret needs no key file");
        let SecretSource::Ssm { parameter } = &settings.cluster.secret else {
            panic!("expected an SSM secret, got {:?}", settings.cluster.secret);
        };
        assert_eq!(parameter, "/ha-agent/web/key");
        assert!(settings.uses_aws(), "fetching the secret is an AWS call");
        assert!(settings.needs_imds(), "the region comes from IMDS");
        assert!(settings
            .summary()
            .contains("SSM parameter /ha-agent/web/key (SecureString, fetched at start)"));
        let plain = replace(&text, "\"/ha-agent/web/key\"", "\"ha-agent.web-key_1\"");
        assert!(fixture.load(&plain).is_ok(), "plain names are fine");
    }

    #[test]
    fn secret_file_and_ssm_parameter_are_exclusive() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.valid(),
            "[node]",
            "secret-ssm-parameter = \"/ha-agent/web/key\"\n[node]",
        );
        assert_problem(
            &fixture.problems(&text),
            &[
                "cluster.secret-file and cluster.secret-ssm-parameter are both set",
                "remove one of them",
            ],
        );
    }

    #[test]
    fn parameter_value_is_checked_like_a_key_file() {
        let secret = Secret::from_parameter_value("/ha-agent/web/key", &format!("  {KEY}\n"))
            .expect("a long key");
        assert_eq!(secret.as_bytes(), KEY.as_bytes());
        let error = Secret::from_parameter_value("/ha-agent/web/key", " short \n").unwrap_err();
        for needle in [
            "cluster.secret-ssm-parameter = \"/ha-agent/web/key\"",
            "only 5 bytes",
            "at least 16",
            "aws ssm put-parameter --type SecureString --name /ha-agent/web/key --value",
        ] {
            assert!(error.contains(needle), "{needle:?} not in {error}");
        }
    }

    #[test]
    fn ssm_parameter_names_are_checked() {
        let fixture = Fixture::new();
        let secret_line = format!("secret-file = \"{}\"", fixture.secret.display());
        let as_secret = |name: &str| {
            replace(
                &fixture.valid(),
                &secret_line,
                &format!("secret-ssm-parameter = \"{name}\""),
            )
        };
        let as_leader = |name: &str| {
            format!(
                "{}\n[aws]\nleader-parameter = \"{name}\"\n",
                fixture.valid()
            )
        };
        let deep = "/a".repeat(16);
        let long = format!("/{}", "k".repeat(1011));
        let cases = [
            ("", "is empty"),
            ("ha-agent/web/key", "does not start with it"),
            ("/ha agent/key", "' '"),
            ("/ha-agent/web:key", "':'"),
            ("é/key", "'é'"),
            ("/clé", "'é'"),
            ("/ha-agent//key", "empty path segment"),
            ("/ha-agent/key/", "empty path segment"),
            ("/", "empty path segment"),
            (long.as_str(), "at most 1011"),
            (deep.as_str(), "at most 15"),
        ];
        for (name, needle) in cases {
            assert_problem(
                &fixture.problems(&as_secret(name)),
                &["cluster.secret-ssm-parameter", needle],
            );
            assert_problem(
                &fixture.problems(&as_leader(name)),
                &["aws.leader-parameter", needle],
            );
        }
        for reserved in ["/aws/ha-agent/leader", "SSM-leader"] {
            assert_problem(
                &fixture.problems(&as_leader(reserved)),
                &["aws.leader-parameter", "AWS reserves those names"],
            );
        }
        // Reading is fine there: /aws/reference/secretsmanager/... reads Secrets Manager.
        assert!(fixture
            .load(&as_secret("/aws/reference/secretsmanager/web-key"))
            .is_ok());
        let longest = format!("/{}", "k".repeat(1010));
        let settings = fixture.load(&as_leader(&longest)).expect("1011 characters");
        assert_eq!(
            settings.aws.leader_parameter.as_deref(),
            Some(longest.as_str())
        );
        assert!(settings.uses_aws(), "the leader writes the parameter");
        assert!(fixture.load(&as_leader(&"/a".repeat(15))).is_ok());
    }

    #[test]
    fn needs_imds_only_when_aws_is_used_and_the_identity_is_incomplete() {
        let fixture = Fixture::new();
        let settings = fixture.load(&fixture.valid()).unwrap();
        assert!(!settings.uses_aws() && !settings.needs_imds());
        let settings = fixture.load(&fixture.with_resources()).unwrap();
        assert!(settings.uses_aws() && settings.needs_imds());

        let settings = fixture
            .load(&format!("{}{IDENTITY}", fixture.with_resources()))
            .unwrap();
        assert!(settings.uses_aws() && !settings.needs_imds());
        assert_eq!(settings.aws.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            settings.aws.instance_id.as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            settings.aws.network_interface_id.as_deref(),
            Some("eni-0123456789abcdef0")
        );
        assert_eq!(settings.aws.private_ip, Some(Ipv4Addr::new(10, 0, 1, 10)));
        for missing in [
            "region = \"us-east-1\"\n",
            "instance-id = \"i-0123456789abcdef0\"\n",
            "network-interface-id = \"eni-0123456789abcdef0\"\n",
            "private-ip = \"10.0.1.10\"\n",
        ] {
            let text = format!(
                "{}{}",
                fixture.with_resources(),
                replace(IDENTITY, missing, "")
            );
            assert!(
                fixture.load(&text).unwrap().needs_imds(),
                "without {missing}"
            );
        }
        // Identity without any AWS use: nothing to ask IMDS for.
        let settings = fixture
            .load(&format!(
                "{}\n[aws]\nregion = \"us-east-1\"\n",
                fixture.valid()
            ))
            .unwrap();
        assert!(!settings.uses_aws() && !settings.needs_imds());

        // A public-ip record needs the public IP too.
        let public = replace(&fixture.with_resources(), "\"private-ip\"", "\"public-ip\"");
        let settings = fixture.load(&format!("{public}{IDENTITY}")).unwrap();
        assert!(settings.needs_imds(), "the public IP comes from IMDS");
        let settings = fixture
            .load(&format!("{public}{IDENTITY}public-ip = \"203.0.113.10\"\n"))
            .unwrap();
        assert!(!settings.needs_imds());
        assert_eq!(settings.aws.public_ip, Some(Ipv4Addr::new(203, 0, 113, 10)));
    }

    #[test]
    fn aws_identity_overrides_are_checked() {
        let fixture = Fixture::new();
        let with = |line: &str| format!("{}\n[aws]\n{line}\n", fixture.with_resources());
        let cases = [
            ("region = \"US-East-1\"", "aws.region", "like \"us-east-1\""),
            ("region = \"us_east_1\"", "aws.region", "remove it"),
            ("region = \"-us-east-1\"", "aws.region", "not a region"),
            ("region = \"\"", "aws.region", "not a region"),
            ("instance-id = \"i-0123\"", "aws.instance-id", "8 or 17"),
            (
                "instance-id = \"i-0123456789ABCDEF0\"",
                "aws.instance-id",
                "lower-case hex",
            ),
            (
                "instance-id = \"0123456789abcdef0\"",
                "aws.instance-id",
                "\"i-\"",
            ),
            (
                "network-interface-id = \"eni-xyz\"",
                "aws.network-interface-id",
                "\"eni-\" followed by lower-case hex digits",
            ),
            (
                "network-interface-id = \"i-0123456789abcdef0\"",
                "aws.network-interface-id",
                "e.g. \"eni-0123456789abcdef0\"",
            ),
            ("private-ip = \"10.0.1\"", "aws.private-ip", "not an IPv4"),
            ("private-ip = \"fd00::10\"", "aws.private-ip", "not an IPv4"),
            ("public-ip = \"203.0.113\"", "aws.public-ip", "not an IPv4"),
        ];
        for (line, key, needle) in cases {
            assert_problem(&fixture.problems(&with(line)), &[key, needle]);
        }
        for id in ["i-01234567", "i-0123456789abcdef0"] {
            let settings = fixture
                .load(&with(&format!("instance-id = \"{id}\"")))
                .expect("8 and 17 digits");
            assert_eq!(settings.aws.instance_id.as_deref(), Some(id));
        }
        assert!(fixture.load(&with("region = \"eu-central-2\"")).is_ok());
        let text = with("colour = \"blue\"");
        assert_problem(&fixture.problems(&text), &["unknown field", "colour"]);
    }

    #[test]
    fn endpoints_are_http_urls_without_trailing_slash() {
        let fixture = Fixture::new();
        let with = |line: &str| format!("{}\n[aws]\n{line}\n", fixture.with_resources());
        let cases = [
            ("169.254.169.254", "http:// or https://"),
            ("ftp://169.254.169.254", "http:// or https://"),
            ("http://", "has no host"),
            ("http:///latest", "has no host"),
            ("http://user:pw@169.254.169.254", "carries credentials"),
            ("http://169.254.169.254:0", "host[:port]"),
            ("http://169.254.169.254:http", "host[:port]"),
            ("http://[fd00::1", "host[:port]"),
            ("http://fd00::1", "host[:port]"),
            ("http://169.254.169.254?x=1", "query"),
            ("http://169.254 .169.254", "whitespace"),
        ];
        for (url, needle) in cases {
            for key in ["imds-endpoint", "endpoint-url"] {
                let text = with(&format!("{key} = \"{url}\""));
                assert_problem(&fixture.problems(&text), &[&format!("aws.{key}"), needle]);
            }
        }
        let settings = fixture
            .load(&with(
                "imds-endpoint = \"http://[fd00:ec2::254]/\"\n\
                 endpoint-url = \"https://moto.test:5000/\"",
            ))
            .unwrap();
        assert_eq!(settings.aws.imds_endpoint, "http://[fd00:ec2::254]");
        assert_eq!(
            settings.aws.endpoint_url.as_deref(),
            Some("https://moto.test:5000")
        );
        let settings = fixture
            .load(&with("endpoint-url = \"http://127.0.0.1:5000/proxy/\""))
            .unwrap();
        assert_eq!(
            settings.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000/proxy")
        );
    }

    #[test]
    fn lease_at_default_timing_is_805ms() {
        assert_eq!(
            lease(DEFAULT_HEARTBEAT_INTERVAL, 10),
            Duration::from_millis(805)
        );
    }

    #[test]
    fn call_timeout_must_fit_inside_the_lease() {
        let fixture = Fixture::new();
        let with = |line: &str| format!("{}\n[aws]\n{line}\n", fixture.with_resources());
        assert_problem(
            &fixture.problems(&with("call-timeout = \"40ms\"")),
            &["aws.call-timeout = 40ms", "at least 50ms"],
        );
        assert_problem(
            &fixture.problems(&with("call-timeout = \"fast\"")),
            &["aws.call-timeout", "not a duration"],
        );
        // Lease 805ms at the defaults: 705ms plus a 100ms heartbeat fits, 706ms does not.
        let settings = fixture
            .load(&with("call-timeout = \"705ms\""))
            .expect("705ms fits");
        assert_eq!(settings.aws.call_timeout, Duration::from_millis(705));
        assert_problem(
            &fixture.problems(&with("call-timeout = \"706ms\"")),
            &[
                "aws.call-timeout = 706ms does not fit inside the leader's lease",
                "a leader starts no AWS call that could outlast its lease",
                "the lease is 805ms",
                "lower aws.call-timeout to at most 705ms",
                "raise cluster.election-timeout to at least 1s 100ms",
            ],
        );
        // The default call timeout against a short election timeout.
        let short = replace(
            &fixture.with_resources(),
            "[node]",
            "heartbeat-interval = \"50ms\"\nelection-timeout = \"250ms\"\n[node]",
        );
        assert_problem(
            &fixture.problems(&short),
            &[
                "aws.call-timeout = 500ms",
                "the lease is 140ms",
                "lower aws.call-timeout to at most 90ms",
                "raise cluster.election-timeout to at least 700ms",
            ],
        );
        // A lease too short for any call: only raising the election timeout helps.
        let tiny = replace(
            &fixture.with_resources(),
            "[node]",
            "heartbeat-interval = \"10ms\"\nelection-timeout = \"100ms\"\n[node]",
        );
        let problems = fixture.problems(&format!("{tiny}\n[aws]\ncall-timeout = \"50ms\"\n"));
        assert_problem(
            &problems,
            &["aws.call-timeout", "raise cluster.election-timeout"],
        );
        assert!(
            !problems
                .iter()
                .any(|p| p.contains("lower aws.call-timeout")),
            "{problems:#?}"
        );
        // Without floating resources or a leader parameter the leader makes no AWS calls.
        let idle = replace(
            &fixture.valid(),
            "[node]",
            "heartbeat-interval = \"50ms\"\nelection-timeout = \"250ms\"\n[node]",
        );
        assert!(fixture.load(&idle).is_ok());
        assert!(fixture
            .load(&format!(
                "{}\n[aws]\ncall-timeout = \"5s\"\n",
                fixture.valid()
            ))
            .is_ok());
        let leader = format!(
            "{}\n[aws]\ncall-timeout = \"5s\"\nleader-parameter = \"/ha-agent/web/leader\"\n",
            fixture.valid()
        );
        assert_problem(
            &fixture.problems(&leader),
            &["aws.call-timeout = 5s", "outlast its lease"],
        );
    }

    #[test]
    fn reconcile_interval_and_hand_off_after_are_checked() {
        let fixture = Fixture::new();
        let with = |line: &str| format!("{}\n[aws]\n{line}\n", fixture.with_resources());
        assert_problem(
            &fixture.problems(&with("reconcile-interval = \"999ms\"")),
            &["aws.reconcile-interval = 999ms", "at least 1s"],
        );
        assert_problem(
            &fixture.problems(&with("reconcile-interval = \"often\"")),
            &["aws.reconcile-interval", "not a duration"],
        );
        assert_problem(
            &fixture.problems(&with("hand-off-after = \"1s 999ms\"")),
            &[
                "aws.hand-off-after = 1s 999ms",
                "cluster.election-timeout = 1s",
                "at least 2s",
            ],
        );
        let settings = fixture
            .load(&with(
                "reconcile-interval = \"1s\"\nhand-off-after = \"2s\"",
            ))
            .expect("the minimums are fine");
        assert_eq!(settings.aws.reconcile_interval, Duration::from_secs(1));
        assert_eq!(settings.aws.hand_off_after, Duration::from_secs(2));
        // A long election timeout makes the default hand-off too short.
        let slow = replace(
            &fixture.with_resources(),
            "[node]",
            "election-timeout = \"20s\"\n[node]",
        );
        assert_problem(
            &fixture.problems(&slow),
            &[
                "aws.hand-off-after = 30s",
                "at least 40s",
                "lower cluster.election-timeout",
            ],
        );
        let slow_idle = replace(
            &fixture.valid(),
            "[node]",
            "election-timeout = \"20s\"\n[node]",
        );
        assert!(
            fixture.load(&slow_idle).is_ok(),
            "no AWS calls, no hand-off"
        );
    }

    #[test]
    fn elastic_ips_are_checked() {
        let fixture = Fixture::new();
        let with = |entries: &[&str]| {
            let mut text = fixture.valid();
            for entry in entries {
                text.push_str(&format!("\n[[elastic-ip]]\n{entry}\n"));
            }
            text
        };
        let cases = [
            (
                "network-interface-id = \"eni-0123456789abcdef0\"",
                "elastic-ip[0].allocation-id is required",
            ),
            (
                "allocation-id = \"eipalloc-XYZ\"",
                "elastic-ip[0].allocation-id = \"eipalloc-XYZ\" is malformed",
            ),
            (
                "allocation-id = \"0123456789abcdef0\"",
                "\"eipalloc-\" followed by",
            ),
            (
                "allocation-id = \"203.0.113.7\"",
                "describe-addresses --public-ips 203.0.113.7",
            ),
            (
                "allocation-id = \"eipalloc-0123456789abcdef0\"\nnetwork-interface-id = \"eth0\"",
                "elastic-ip[0].network-interface-id = \"eth0\" is malformed",
            ),
            (
                "allocation-id = \"eipalloc-0123456789abcdef0\"\nprivate-ip = \"10.0.1.300\"",
                "elastic-ip[0].private-ip = \"10.0.1.300\" is not an IPv4 address",
            ),
        ];
        for (entry, needle) in cases {
            assert_problem(&fixture.problems(&with(&[entry])), &[needle]);
        }
        let problems = fixture.problems(&with(&[
            "allocation-id = \"eipalloc-0123456789abcdef0\"",
            "allocation-id = \"eipalloc-00000001\"",
            "allocation-id = \"eipalloc-0123456789abcdef0\"",
        ]));
        assert_problem(
            &problems,
            &[
                "elastic-ip[2].allocation-id",
                "also the allocation id of elastic-ip[0]",
                "remove one",
            ],
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_problem(
            &fixture.problems(&with(&[
                "allocation-id = \"eipalloc-01\"\ncolour = \"blue\"",
            ])),
            &["unknown field", "colour"],
        );

        // Interface and private IP default independently.
        let settings = fixture
            .load(&with(&[
                "allocation-id = \"eipalloc-0123456789abcdef0\"",
                "allocation-id = \"eipalloc-00000001\"\nprivate-ip = \"10.0.1.20\"",
                "allocation-id = \"eipalloc-00000002\"\nnetwork-interface-id = \"eni-0a1b2c3d\"",
                "allocation-id = \"eipalloc-00000003\"\nnetwork-interface-id = \"eni-0a1b2c3d\"\n\
                 private-ip = \"10.0.2.20\"",
            ]))
            .expect("valid Elastic IPs");
        let eips: Vec<_> = settings
            .elastic_ips
            .iter()
            .map(|e| {
                (
                    e.allocation_id.as_str(),
                    e.network_interface_id.as_deref(),
                    e.private_ip,
                )
            })
            .collect();
        assert_eq!(
            eips,
            [
                ("eipalloc-0123456789abcdef0", None, None),
                ("eipalloc-00000001", None, Some(Ipv4Addr::new(10, 0, 1, 20))),
                ("eipalloc-00000002", Some("eni-0a1b2c3d"), None),
                (
                    "eipalloc-00000003",
                    Some("eni-0a1b2c3d"),
                    Some(Ipv4Addr::new(10, 0, 2, 20))
                ),
            ]
        );
        assert!(settings.uses_aws());
        assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
    }

    const ZONE: &str = "hosted-zone-id = \"Z0123456789ABCDEFGHIJ\"";

    fn record(name: &str, kind: &str, value: &str) -> String {
        format!("{ZONE}\nname = \"{name}\"\ntype = \"{kind}\"\nvalue = \"{value}\"")
    }

    #[test]
    fn route53_records_are_checked() {
        let fixture = Fixture::new();
        let good = record("db.internal.example.com.", "A", "private-ip");
        let cases = [
            (
                "name = \"db.\"\ntype = \"A\"\nvalue = \"private-ip\"".to_string(),
                "route53-record[0].hosted-zone-id is required",
            ),
            (
                replace(&good, "Z0123456789ABCDEFGHIJ", "z0123"),
                "route53-record[0].hosted-zone-id = \"z0123\"",
            ),
            (
                replace(&good, "Z0123456789ABCDEFGHIJ", "internal.example.com"),
                "list-hosted-zones-by-name --dns-name internal.example.com",
            ),
            (
                format!("{ZONE}\ntype = \"A\"\nvalue = \"private-ip\""),
                "route53-record[0].name is required",
            ),
            (
                replace(&good, "db.internal.example.com.", ""),
                "route53-record[0].name is empty",
            ),
            (
                replace(&good, "db.internal.example.com.", "db internal"),
                "contains whitespace",
            ),
            (
                replace(&good, "db.internal.example.com.", "db..example.com"),
                "empty label",
            ),
            (
                replace(&good, "db.internal.example.com.", ".example.com"),
                "empty label",
            ),
            (
                replace(&good, "db.internal.example.com.", "."),
                "empty label",
            ),
            (
                replace(
                    &good,
                    "db.internal.example.com.",
                    &format!("{}com", "a.".repeat(126)),
                ),
                "route53-record[0].name is 256 characters long",
            ),
            (
                format!("{ZONE}\nname = \"db.\"\nvalue = \"private-ip\""),
                "route53-record[0].type is required",
            ),
            (
                replace(&good, "\"A\"", "\"MX\""),
                "route53-record[0].type = \"MX\"",
            ),
            (
                format!("{ZONE}\nname = \"db.\"\ntype = \"A\""),
                "route53-record[0].value is required",
            ),
            (
                replace(&good, "\"private-ip\"", "\"leader\""),
                "route53-record[0].value = \"leader\" is not a record value",
            ),
            (
                format!("{good}\nttl = -1"),
                "route53-record[0].ttl = -1 is out of range",
            ),
            (format!("{good}\nttl = 172801"), "0 to 172800"),
        ];
        for (body, needle) in cases {
            assert_problem(
                &fixture.problems(&fixture.with_records(&[&body])),
                &[needle],
            );
        }
        let problems = fixture.problems(&fixture.with_records(&[&format!("{good}\nweight = 1")]));
        assert_problem(&problems, &["unknown field", "weight"]);
        let problems = fixture.problems(&fixture.with_records(&[&format!("{good}\nttl = \"10\"")]));
        assert_problem(&problems, &["ttl", "line"]);

        let bodies = [
            replace(&good, "db.internal.example.com.", "DB.Internal.Example.COM"),
            format!(
                "{}\nttl = 0",
                replace(
                    &record("db.internal.example.com", "cname", "node"),
                    "Z0123456789ABCDEFGHIJ",
                    "/hostedzone/Z9"
                )
            ),
            format!(
                "{}\nttl = 172800",
                record("_meta.example.com.", "txt", "node")
            ),
            record(&format!("{}abcd.", "a.".repeat(125)), "A", "public-ip"),
        ];
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let text = replace(
            &fixture.with_records(&bodies),
            "id = 1\n",
            "id = 1\nrecord-value = \"db1.internal.example.com.\"\n",
        );
        let settings = fixture.load(&text).expect("valid records");
        let records: Vec<_> = settings
            .route53_records
            .iter()
            .map(|r| {
                (
                    r.hosted_zone_id.as_str(),
                    r.name.as_str(),
                    r.record_type,
                    r.ttl,
                    r.value.clone(),
                )
            })
            .collect();
        let long = format!("{}abcd.", "a.".repeat(125));
        assert_eq!(long.len(), 255);
        assert_eq!(
            records,
            [
                (
                    "Z0123456789ABCDEFGHIJ",
                    "db.internal.example.com.",
                    RecordType::A,
                    10,
                    RecordValue::PrivateIp
                ),
                (
                    "Z9",
                    "db.internal.example.com.",
                    RecordType::Cname,
                    0,
                    RecordValue::Node
                ),
                (
                    "Z0123456789ABCDEFGHIJ",
                    "_meta.example.com.",
                    RecordType::Txt,
                    172800,
                    RecordValue::Node
                ),
                (
                    "Z0123456789ABCDEFGHIJ",
                    long.as_str(),
                    RecordType::A,
                    10,
                    RecordValue::PublicIp
                ),
            ]
        );
        assert_eq!(
            settings.node.record_value.as_deref(),
            Some("db1.internal.example.com.")
        );
        assert_eq!(RecordType::Aaaa.as_str(), "AAAA");
        assert_eq!(RecordType::Cname.as_str(), "CNAME");
        assert_eq!(RecordType::Txt.as_str(), "TXT");
    }

    #[test]
    fn record_values_must_suit_the_record_type() {
        let fixture = Fixture::new();
        let with_value = |value: Option<&str>, body: &str| {
            let text = fixture.with_records(&[body]);
            match value {
                Some(value) => replace(
                    &text,
                    "id = 1\n",
                    &format!("id = 1\nrecord-value = \"{value}\"\n"),
                ),
                None => text,
            }
        };
        let cases = [
            (
                None,
                record("db.", "AAAA", "private-ip"),
                "route53-record[0].value = \"private-ip\" requires type = \"A\"",
            ),
            (
                None,
                record("db.", "CNAME", "public-ip"),
                "route53-record[0].type = \"CNAME\"",
            ),
            (
                None,
                record("db.", "A", "node"),
                "route53-record[0].value = \"node\" needs node.record-value",
            ),
            (
                Some("fd00::10"),
                record("db.", "A", "node"),
                "node.record-value = \"fd00::10\" is not an IPv4 address",
            ),
            (
                Some("10.0.1.10"),
                record("db.", "AAAA", "node"),
                "node.record-value = \"10.0.1.10\" is not an IPv6 address",
            ),
            (
                Some(" "),
                record("db.", "TXT", "node"),
                "node.record-value is empty",
            ),
        ];
        for (value, body, needle) in cases {
            assert_problem(&fixture.problems(&with_value(value, &body)), &[needle]);
        }
        assert_problem(
            &fixture.problems(&with_value(None, &record("db.", "A", "node"))),
            &["every node must set its own record-value"],
        );
        assert_problem(
            &fixture.problems(&with_value(Some("db1"), &record("db.", "A", "node"))),
            &[
                "route53-record[0] (type A, value = \"node\")",
                "e.g. record-value = \"10.0.1.10\"",
            ],
        );
        // An empty record-value is reported once, not again for each record using it.
        let problems = fixture.problems(&with_value(Some(""), &record("db.", "A", "node")));
        assert_eq!(problems.len(), 1, "{problems:#?}");

        for (value, kind) in [
            ("10.0.1.10", "A"),
            ("fd00::10", "AAAA"),
            ("db1.example.com.", "CNAME"),
            ("v=1 node=1", "TXT"),
        ] {
            let settings = fixture
                .load(&with_value(Some(value), &record("db.", kind, "node")))
                .unwrap_or_else(|e| panic!("{value} for {kind}: {e}"));
            assert_eq!(settings.node.record_value.as_deref(), Some(value));
            assert_eq!(settings.route53_records[0].value, RecordValue::Node);
        }
    }

    #[test]
    fn duplicate_records_are_rejected() {
        let fixture = Fixture::new();
        let a = record("db.internal.example.com.", "A", "private-ip");
        let problems = fixture.problems(&fixture.with_records(&[
            &a,
            &record("other.example.com.", "A", "private-ip"),
            &replace(
                &record("DB.internal.example.com", "a", "public-ip"),
                "Z0123456789ABCDEFGHIJ",
                "/hostedzone/Z0123456789ABCDEFGHIJ",
            ),
        ]));
        assert_problem(
            &problems,
            &[
                "route53-record[2].name = \"db.internal.example.com.\"",
                "also route53-record[0]",
                "remove one",
            ],
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let text = replace(
            &fixture.with_records(&[&a, &record("db.internal.example.com.", "CNAME", "node")]),
            "id = 1\n",
            "id = 1\nrecord-value = \"db1.internal.example.com.\"\n",
        );
        assert_problem(
            &fixture.problems(&text),
            &[
                "route53-record[1].name",
                "route53-record[0] (type A)",
                "beside a CNAME",
            ],
        );
        // Same name, other type or other zone: separate records.
        let text = replace(
            &fixture.with_records(&[
                &a,
                &record("db.internal.example.com.", "AAAA", "node"),
                &replace(&a, "Z0123456789ABCDEFGHIJ", "Z2"),
            ]),
            "id = 1\n",
            "id = 1\nrecord-value = \"fd00::10\"\n",
        );
        assert_eq!(
            fixture
                .load(&text)
                .expect("distinct records")
                .route53_records
                .len(),
            3
        );
    }

    #[test]
    fn warnings_name_missing_resources_and_the_emulator() {
        let fixture = Fixture::new();
        let settings = fixture.load(&fixture.with_resources()).unwrap();
        assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
        let settings = fixture.load(&witness_node(&fixture, "")).unwrap();
        assert!(
            settings.warnings().is_empty(),
            "a witness never holds resources"
        );
        let text = format!(
            "{}\n[aws]\nendpoint-url = \"http://127.0.0.1:5000/\"\n",
            fixture.with_resources()
        );
        let warnings = fixture.load(&text).unwrap().warnings();
        assert_problem(
            &warnings,
            &[
                "aws.endpoint-url",
                "every AWS call goes to http://127.0.0.1:5000",
                "for emulators only",
            ],
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn summary_shows_aws_identity_endpoint_and_resources() {
        let fixture = Fixture::new();
        let text = replace(
            &fixture.with_resources(),
            "id = 1\n",
            "id = 1\nrecord-value = \"fd00::10\"\n",
        );
        let text = format!(
            "{text}\n[[route53-record]]\n{}\nttl = 60\n\n[[elastic-ip]]\n\
             allocation-id = \"eipalloc-00000001\"\nnetwork-interface-id = \"eni-0a1b2c3d\"\n\
             private-ip = \"10.0.2.20\"\n\n[aws]\nregion = \"eu-west-1\"\n\
             endpoint-url = \"http://127.0.0.1:5000\"\n\
             leader-parameter = \"/ha-agent/web/leader\"\n",
            record("db.internal.example.com.", "AAAA", "node")
        );
        let summary = fixture.load(&text).unwrap().summary();
        for needle in [
            "aws identity     region eu-west-1; the rest from IMDS at http://169.254.169.254",
            "aws endpoint     http://127.0.0.1:5000 (every AWS call goes here: for emulators only)",
            "leader parameter /ha-agent/web/leader",
            "aws timing       call timeout 500ms, reconcile every 10s, hand off after 30s",
            "  elastic IP     eipalloc-0123456789abcdef0 on the primary interface, its primary \
             private IP",
            "  elastic IP     eipalloc-00000001 on eni-0a1b2c3d, 10.0.2.20",
            "  route53 record db.internal.example.com. A in zone Z0123456789ABCDEFGHIJ, ttl 10, \
             value private-ip",
            "  route53 record db.internal.example.com. AAAA in zone Z0123456789ABCDEFGHIJ, ttl 60, \
             value node (fd00::10)",
        ] {
            assert!(summary.contains(needle), "summary lacks {needle:?}:\n{summary}");
        }

        let summary = fixture
            .load(&format!("{}{IDENTITY}", fixture.with_resources()))
            .unwrap()
            .summary();
        assert!(
            summary.contains(
                "aws identity     region us-east-1, instance i-0123456789abcdef0, interface \
                 eni-0123456789abcdef0, private IP 10.0.1.10\n"
            ),
            "{summary}"
        );
        let summary = fixture.load(&fixture.valid()).unwrap().summary();
        assert!(
            summary.contains("resources        none: the group elects a leader but moves nothing"),
            "{summary}"
        );
        assert!(
            !summary.contains("aws identity"),
            "no AWS use, no identity:\n{summary}"
        );
    }

    /// The valid configuration plus these `[[check]]` bodies.
    fn with_checks(fixture: &Fixture, checks: &[&str]) -> String {
        let mut text = fixture.valid();
        for check in checks {
            text.push_str(&format!("\n[[check]]\n{check}\n"));
        }
        text
    }

    const HTTP: &str = "name = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:8080/healthz\"";
    const TCP: &str = "name = \"db-port\"\ntype = \"tcp\"\naddress = \"127.0.0.1:5432\"";
    const EXEC: &str = "name = \"replication\"\ntype = \"exec\"\n\
                        command = [\"/usr/local/bin/check-replica\", \"--max-lag\", \"5\"]";

    #[test]
    fn checks_load_with_defaults() {
        let fixture = Fixture::new();
        let settings = fixture
            .load(&with_checks(&fixture, &[HTTP, TCP, EXEC]))
            .expect("valid checks");
        assert_eq!(settings.checks.len(), 3);
        for check in &settings.checks {
            assert_eq!(check.interval, Duration::from_secs(1), "{}", check.name);
            assert_eq!(check.timeout, Duration::from_millis(500), "{}", check.name);
            assert_eq!(check.rise, 2, "{}", check.name);
            assert_eq!(check.fall, 3, "{}", check.name);
        }
        assert_eq!(
            settings.checks[0].kind,
            CheckKind::Http {
                url: "http://127.0.0.1:8080/healthz".to_string(),
                expect_status: 200..=399,
                body: None,
            }
        );
        assert_eq!(
            settings.checks[1].kind,
            CheckKind::Tcp {
                address: "127.0.0.1:5432".to_string()
            }
        );
        let names: Vec<_> = settings.checks.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(names, ["http", "tcp", "exec"]);

        // Timing given; the timeout defaults to half of a given interval.
        let settings = fixture
            .load(&with_checks(
                &fixture,
                &[
                    &format!("{HTTP}\ninterval = \"5s\"\nrise = 1\nfall = 100"),
                    &format!("{TCP}\ninterval = \"100ms\"\ntimeout = \"99ms\"\nrise = 100"),
                ],
            ))
            .expect("valid timing");
        let timing: Vec<_> = settings
            .checks
            .iter()
            .map(|c| (c.interval, c.timeout, c.rise, c.fall))
            .collect();
        assert_eq!(
            timing,
            [
                (Duration::from_secs(5), Duration::from_millis(2500), 1, 100),
                (
                    Duration::from_millis(100),
                    Duration::from_millis(99),
                    100,
                    3
                ),
            ]
        );
    }

    #[test]
    fn http_checks_are_checked() {
        let fixture = Fixture::new();
        let cases = [
            (
                "name = \"web\"\ntype = \"http\"".to_string(),
                "check[0].url is required for type = \"http\"",
            ),
            (
                replace(
                    HTTP,
                    "http://127.0.0.1:8080/healthz",
                    "127.0.0.1:8080/healthz",
                ),
                "check[0].url = \"127.0.0.1:8080/healthz\"",
            ),
            (
                replace(
                    HTTP,
                    "http://127.0.0.1:8080/healthz",
                    "localhost:8080/healthz",
                ),
                "is not an http:// or https:// URL",
            ),
            (
                replace(
                    HTTP,
                    "http://127.0.0.1:8080/healthz",
                    "ftp://127.0.0.1/healthz",
                ),
                "check[0].url = \"ftp://127.0.0.1/healthz\" is not an http:// or https:// URL",
            ),
            (
                replace(HTTP, "http://127.0.0.1:8080/healthz", "http://"),
                "check[0].url = \"http://\" is not a URL",
            ),
            (
                replace(
                    HTTP,
                    "http://127.0.0.1:8080/healthz",
                    "http://127.0.0.1:99999/",
                ),
                "check[0].url",
            ),
            (
                replace(HTTP, "/healthz", "/health z"),
                "check[0].url = \"http://127.0.0.1:8080/health z\" contains whitespace",
            ),
            (format!("{HTTP}\nbody = \"\""), "check[0].body is empty"),
        ];
        for (body, needle) in cases {
            assert_problem(
                &fixture.problems(&with_checks(&fixture, &[&body])),
                &[needle],
            );
        }
        for (status, needle) in [
            ("99", "check[0].expect-status = 99 is not an HTTP status"),
            ("600", "check[0].expect-status = 600"),
            ("-200", "check[0].expect-status = -200"),
            ("\"2xx\"", "check[0].expect-status = \"2xx\""),
            ("\"\"", "check[0].expect-status = \"\""),
            ("\"200-\"", "check[0].expect-status = \"200-\""),
            ("\"200-600\"", "check[0].expect-status = \"200-600\""),
            ("\"200-299-399\"", "check[0].expect-status"),
            ("[200, 204]", "check[0].expect-status = [200, 204]"),
            ("\"299-200\"", "is an empty range"),
        ] {
            let text = with_checks(&fixture, &[&format!("{HTTP}\nexpect-status = {status}")]);
            assert_problem(&fixture.problems(&text), &[needle]);
        }
        assert_problem(
            &fixture.problems(&with_checks(
                &fixture,
                &[&format!("{HTTP}\nexpect-status = \"299-200\"")],
            )),
            &["e.g. \"200-299\""],
        );
        assert_problem(
            &fixture.problems(&with_checks(
                &fixture,
                &[&format!("{HTTP}\nexpect-status = 1")],
            )),
            &["100 to 599", "default \"200-399\""],
        );

        for (status, expected) in [
            ("204", 204..=204),
            ("\"200\"", 200..=200),
            ("\"200-299\"", 200..=299),
            ("\" 100 - 599 \"", 100..=599),
            ("\"301-301\"", 301..=301),
        ] {
            let text = with_checks(
                &fixture,
                &[&format!("{HTTP}\nexpect-status = {status}\nbody = \"ok\"")],
            );
            let settings = fixture
                .load(&text)
                .unwrap_or_else(|e| panic!("{status}: {e}"));
            assert_eq!(
                settings.checks[0].kind,
                CheckKind::Http {
                    url: "http://127.0.0.1:8080/healthz".to_string(),
                    expect_status: expected,
                    body: Some("ok".to_string()),
                }
            );
        }
        for url in [
            "https://web.internal:8443/healthz?deep=1",
            "http://[::1]:8080/",
            "http://localhost",
        ] {
            let text = with_checks(
                &fixture,
                &[&replace(HTTP, "http://127.0.0.1:8080/healthz", url)],
            );
            let settings = fixture.load(&text).unwrap_or_else(|e| panic!("{url}: {e}"));
            match &settings.checks[0].kind {
                CheckKind::Http { url: kept, .. } => assert_eq!(kept, url, "kept as written"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tcp_checks_are_checked() {
        let fixture = Fixture::new();
        assert_problem(
            &fixture.problems(&with_checks(&fixture, &["name = \"db\"\ntype = \"tcp\""])),
            &["check[0].address is required for type = \"tcp\""],
        );
        for (address, needle) in [
            ("127.0.0.1", "has no port"),
            ("db.internal", "has no port"),
            ("127.0.0.1:0", "has port 0"),
            ("db.internal:0", "no valid port"),
            ("db.internal:pg", "no valid port"),
            ("db.internal:65536", "no valid port"),
            (":5432", "has no host"),
            ("db internal:5432", "no valid host name"),
            ("db..internal:5432", "no valid host name"),
            ("http://db:5432", "no valid host name"),
            ("10.0.1.300:5432", "no valid IP address"),
            ("::1:5432", "without brackets"),
            ("", "has no port"),
        ] {
            let text = with_checks(&fixture, &[&replace(TCP, "127.0.0.1:5432", address)]);
            assert_problem(
                &fixture.problems(&text),
                &[
                    &format!("check[0].address = {address:?} is not host:port"),
                    needle,
                ],
            );
        }
        for address in [
            "127.0.0.1:5432",
            "[::1]:5432",
            "[fd00::10]:5432",
            "localhost:5432",
            "db-1.internal.example.com.:5432",
            "db_1:1",
        ] {
            let text = with_checks(&fixture, &[&replace(TCP, "127.0.0.1:5432", address)]);
            let settings = fixture
                .load(&text)
                .unwrap_or_else(|e| panic!("{address}: {e}"));
            assert_eq!(
                settings.checks[0].kind,
                CheckKind::Tcp {
                    address: address.to_string()
                }
            );
        }
    }

    #[test]
    fn exec_checks_are_checked() {
        let fixture = Fixture::new();
        let cases = [
            (
                "name = \"repl\"\ntype = \"exec\"",
                "check[0].command is required for type = \"exec\"",
            ),
            (
                "name = \"repl\"\ntype = \"exec\"\ncommand = []",
                "check[0].command is empty",
            ),
            (
                "name = \"repl\"\ntype = \"exec\"\ncommand = [\"\", \"--max-lag\"]",
                "check[0].command[0] is empty",
            ),
            (
                "name = \"repl\"\ntype = \"exec\"\ncommand = [\"check-replica\", \"5\"]",
                "check[0].command[0] = \"check-replica\" is not an absolute path",
            ),
            (
                "name = \"repl\"\ntype = \"exec\"\ncommand = [\"./bin/check\"]",
                "`command -v check`",
            ),
            (
                "name = \"repl\"\ntype = \"exec\"\ncommand = [\"/bin/check\", \"a\\u0000b\"]",
                "check[0].command[1] contains a NUL",
            ),
        ];
        for (body, needle) in cases {
            assert_problem(
                &fixture.problems(&with_checks(&fixture, &[body])),
                &[needle],
            );
        }
        // A string instead of an argv is a type error with its line.
        let text = with_checks(
            &fixture,
            &["name = \"repl\"\ntype = \"exec\"\ncommand = \"/bin/true\""],
        );
        assert_problem(&fixture.problems(&text), &["command", "line"]);
        let settings = fixture
            .load(&with_checks(
                &fixture,
                &["name = \"t\"\ntype = \"exec\"\ncommand = [\"/bin/true\"]"],
            ))
            .expect("a command without arguments");
        assert_eq!(
            settings.checks[0].kind,
            CheckKind::Exec {
                command: vec!["/bin/true".to_string()]
            }
        );
    }

    #[test]
    fn check_keys_must_suit_the_type() {
        let fixture = Fixture::new();
        let cases = [
            (
                format!("{HTTP}\ncommand = [\"/bin/true\"]"),
                "check[0].command is only for type = \"exec\", but check[0].type = \"http\"",
            ),
            (
                format!("{HTTP}\naddress = \"127.0.0.1:80\""),
                "check[0].address is only for type = \"tcp\"",
            ),
            (
                format!("{TCP}\nurl = \"http://127.0.0.1/\""),
                "check[0].url is only for type = \"http\", but check[0].type = \"tcp\"",
            ),
            (
                format!("{EXEC}\nexpect-status = 200"),
                "check[0].expect-status is only for type = \"http\"",
            ),
            (
                format!("{EXEC}\nbody = \"ok\""),
                "check[0].body is only for type = \"http\"",
            ),
        ];
        for (body, needle) in cases {
            assert_problem(
                &fixture.problems(&with_checks(&fixture, &[&body])),
                &[needle, "or fix the type"],
            );
        }
        let problems = fixture.problems(&with_checks(
            &fixture,
            &["name = \"x\"\nurl = \"http://a/\""],
        ));
        assert_problem(
            &problems,
            &["check[0].type is required", "\"http\", \"tcp\" or \"exec\""],
        );
        assert_eq!(
            problems.len(),
            1,
            "no type, no complaint about its keys: {problems:#?}"
        );
        let problems = fixture.problems(&with_checks(
            &fixture,
            &["name = \"x\"\ntype = \"icmp\"\naddress = \"10.0.0.1:1\""],
        ));
        assert_problem(&problems, &["check[0].type = \"icmp\" is not a check type"]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_problem(
            &fixture.problems(&with_checks(
                &fixture,
                &[&replace(HTTP, "\"http\"", "\"HTTP\"")],
            )),
            &["check[0].type = \"HTTP\""],
        );
        assert_problem(
            &fixture.problems(&with_checks(
                &fixture,
                &[&format!("{HTTP}\nmethod = \"HEAD\"")],
            )),
            &["unknown field", "method", "line"],
        );
    }

    #[test]
    fn check_names_are_required_unique_and_short() {
        let fixture = Fixture::new();
        let cases = [
            (
                "type = \"tcp\"\naddress = \"127.0.0.1:5432\"".to_string(),
                "check[0].name is required",
            ),
            (
                replace(TCP, "\"db-port\"", "\"\""),
                "check[0].name is empty",
            ),
            (
                replace(TCP, "\"db-port\"", "\"db port\""),
                "check[0].name = \"db port\" contains ' '",
            ),
            (
                replace(TCP, "\"db-port\"", "\"db/port\""),
                "check[0].name = \"db/port\" contains '/'",
            ),
            (
                replace(TCP, "\"db-port\"", &format!("\"{}\"", "a".repeat(65))),
                "check[0].name is 65 characters long: use at most 64",
            ),
        ];
        for (body, needle) in cases {
            assert_problem(
                &fixture.problems(&with_checks(&fixture, &[&body])),
                &[needle],
            );
        }
        let problems = fixture.problems(&with_checks(
            &fixture,
            &[HTTP, TCP, &replace(EXEC, "\"replication\"", "\"web\"")],
        ));
        assert_problem(
            &problems,
            &[
                "check[2].name = \"web\" is also the name of check[0]",
                "rename one",
            ],
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let text = with_checks(
            &fixture,
            &[&replace(
                TCP,
                "\"db-port\"",
                &format!("\"{}\"", "a.B_9-".repeat(10) + "abcd"),
            )],
        );
        assert!(
            fixture.load(&text).is_ok(),
            "64 characters of the allowed set"
        );
    }

    #[test]
    fn check_timing_is_checked() {
        let fixture = Fixture::new();
        let cases = [
            (
                "interval = \"99ms\"",
                "check[0].interval = 99ms is too short",
                "at least 100ms",
            ),
            (
                "interval = \"often\"",
                "check[0].interval",
                "not a duration",
            ),
            (
                "timeout = \"1s\"",
                "check[0].timeout = 1s is not shorter than check[0].interval = 1s",
                "default: half the interval, 500ms",
            ),
            (
                "interval = \"2s\"\ntimeout = \"3s\"",
                "check[0].timeout = 3s is not shorter than check[0].interval = 2s",
                "raise check[0].interval",
            ),
            (
                "timeout = \"0s\"",
                "check[0].timeout = 0s",
                "every probe would fail",
            ),
            ("timeout = \"soon\"", "check[0].timeout", "not a duration"),
            ("rise = 0", "check[0].rise = 0 is out of range", "1 to 100"),
            ("rise = 101", "check[0].rise = 101", "default 2"),
            ("fall = 0", "check[0].fall = 0 is out of range", "1 to 100"),
            ("fall = -1", "check[0].fall = -1", "default 3"),
            (
                "fall = 4294967297",
                "check[0].fall = 4294967297",
                "1 to 100",
            ),
        ];
        for (extra, key, needle) in cases {
            let text = with_checks(&fixture, &[&format!("{HTTP}\n{extra}")]);
            assert_problem(&fixture.problems(&text), &[key, needle]);
        }
        // Timing is checked on checks whose other keys are wrong too, all in one round.
        let problems = fixture.problems(&with_checks(
            &fixture,
            &["name = \"web\"\ntype = \"http\"\ntimeout = \"2s\"\nrise = 0"],
        ));
        assert_problem(&problems, &["check[0].url is required"]);
        assert_problem(&problems, &["check[0].timeout = 2s"]);
        assert_problem(&problems, &["check[0].rise = 0"]);
        // An invalid interval is reported once; its timeout is not compared with it.
        let problems = fixture.problems(&with_checks(
            &fixture,
            &[&format!("{HTTP}\ninterval = \"10ms\"\ntimeout = \"20ms\"")],
        ));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let problems = fixture.problems(&with_checks(
            &fixture,
            &[&format!("{HTTP}\ninterval = \"x\"")],
        ));
        assert_eq!(problems.len(), 1, "{problems:#?}");
    }

    #[test]
    fn bad_checks_named_in_the_issue_are_rejected_with_the_key() {
        // Issue 5: "no URL, timeout >= interval, empty command", in one file, all reported.
        let fixture = Fixture::new();
        let problems = fixture.problems(&with_checks(
            &fixture,
            &[
                "name = \"web\"\ntype = \"http\"",
                &format!("{TCP}\ninterval = \"1s\"\ntimeout = \"1s\""),
                "name = \"repl\"\ntype = \"exec\"\ncommand = []",
            ],
        ));
        assert_problem(&problems, &["check[0].url is required"]);
        assert_problem(
            &problems,
            &["check[1].timeout = 1s is not shorter than check[1].interval"],
        );
        assert_problem(&problems, &["check[2].command is empty"]);
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }

    #[test]
    fn hooks_are_checked() {
        let fixture = Fixture::new();
        let with = |lines: &str| format!("{}\n[hooks]\n{lines}\n", fixture.valid());
        let settings = fixture
            .load(&with(
                "on-leader = [\"/usr/local/bin/notify\", \"leader\"]\n\
                 on-fault = [\"/usr/bin/logger\", \"-t\", \"ha-agent\", \"fault\"]\n\
                 timeout = \"300s\"",
            ))
            .expect("valid hooks");
        let hooks = &settings.hooks;
        assert_eq!(
            hooks.on_leader.as_deref(),
            Some(&["/usr/local/bin/notify".to_string(), "leader".to_string()][..])
        );
        assert_eq!(hooks.on_follower, None);
        assert_eq!(hooks.on_fault.as_ref().map(Vec::len), Some(4));
        assert_eq!(hooks.timeout, Duration::from_secs(300));
        let settings = fixture
            .load(&with("timeout = \"100ms\""))
            .expect("the minimum");
        assert_eq!(settings.hooks.timeout, Duration::from_millis(100));
        let settings = fixture.load(&with("")).expect("an empty [hooks]");
        assert_eq!(settings.hooks.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(HookSettings::default().timeout, Duration::from_secs(10));

        for key in ["on-leader", "on-follower", "on-fault"] {
            let cases = [
                (format!("{key} = []"), format!("hooks.{key} is empty")),
                (
                    format!("{key} = [\"\"]"),
                    format!("hooks.{key}[0] is empty"),
                ),
                (
                    format!("{key} = [\"notify\", \"x\"]"),
                    format!("hooks.{key}[0] = \"notify\" is not an absolute path"),
                ),
                (
                    format!("{key} = [\"bin/notify\"]"),
                    "without a PATH search".to_string(),
                ),
            ];
            for (line, needle) in cases {
                assert_problem(&fixture.problems(&with(&line)), &[&needle]);
            }
            assert_problem(
                &fixture.problems(&with(&format!("{key} = \"/bin/notify leader\""))),
                &[key, "line"],
            );
        }
        for (line, needle) in [
            ("timeout = \"99ms\"", "hooks.timeout = 99ms is out of range"),
            (
                "timeout = \"301s\"",
                "hooks.timeout = 5m 1s is out of range",
            ),
            ("timeout = \"0s\"", "100ms to 5m (default 10s)"),
            (
                "timeout = \"ten\"",
                "hooks.timeout = \"ten\" is not a duration",
            ),
        ] {
            assert_problem(&fixture.problems(&with(line)), &[needle]);
        }
        assert_problem(
            &fixture.problems(&with("on-master = [\"/bin/true\"]")),
            &["unknown field", "on-master"],
        );
        // All three bad hooks are reported in one round.
        let problems = fixture.problems(&with(
            "on-leader = []\non-follower = [\"x\"]\non-fault = [\"\"]\ntimeout = \"1h\"",
        ));
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn preemption_keys_default_and_are_checked() {
        let fixture = Fixture::new();
        let with = |extra: &str| replace(&fixture.valid(), "[node]", &format!("{extra}\n[node]"));
        let settings = fixture
            .load(&with(
                "preempt = true\npreempt-delay = \"0s\"\nmin-hand-off-interval = \"2s\"",
            ))
            .expect("valid preemption");
        assert!(settings.cluster.preempt);
        assert_eq!(settings.cluster.preempt_delay, Duration::ZERO);
        assert_eq!(
            settings.cluster.min_hand_off_interval,
            Duration::from_secs(2)
        );
        // Without preempt, preempt-delay and min-hand-off-interval are fine (and unused).
        let settings = fixture
            .load(&with(
                "preempt-delay = \"2h\"\nmin-hand-off-interval = \"1m\"",
            ))
            .expect("delay without preempt");
        assert!(!settings.cluster.preempt);
        assert_eq!(settings.cluster.preempt_delay, Duration::from_secs(7200));
        assert_eq!(
            settings.cluster.min_hand_off_interval,
            Duration::from_secs(60)
        );

        for (extra, needle) in [
            (
                "preempt-delay = \"later\"",
                "cluster.preempt-delay = \"later\" is not a duration",
            ),
            ("preempt-delay = \"-1s\"", "cluster.preempt-delay"),
            (
                "min-hand-off-interval = \"often\"",
                "cluster.min-hand-off-interval = \"often\" is not a duration",
            ),
            ("preempt = \"yes\"", "preempt"),
        ] {
            assert_problem(&fixture.problems(&with(extra)), &[needle]);
        }
        // At least two election timeouts, whenever the key is given.
        assert_problem(
            &fixture.problems(&with("min-hand-off-interval = \"1s 999ms\"")),
            &[
                "cluster.min-hand-off-interval = 1s 999ms is too short for \
                 cluster.election-timeout = 1s",
                "at least 2s",
                "flapping",
            ],
        );
        let problems = fixture.problems(&with(
            "election-timeout = \"10s\"\nmin-hand-off-interval = \"15s\"",
        ));
        assert_problem(
            &problems,
            &[
                "cluster.min-hand-off-interval = 15s",
                "at least 20s",
                "default 30s",
            ],
        );
        // The default applies too, once health or preemption hand-offs can happen.
        let slow = with("election-timeout = \"20s\"");
        assert!(
            fixture.load(&slow).is_ok(),
            "no checks, no preempt: no hand-offs"
        );
        assert_problem(
            &fixture.problems(&replace(&slow, "[node]", "preempt = true\n[node]")),
            &[
                "cluster.min-hand-off-interval = 30s (the default) is too short",
                "at least 40s",
                "or lower cluster.election-timeout",
            ],
        );
        let slow_checked = format!("{slow}\n[[check]]\n{TCP}\n");
        assert_problem(
            &fixture.problems(&slow_checked),
            &["cluster.min-hand-off-interval = 30s (the default)"],
        );
        assert!(fixture
            .load(&replace(
                &slow_checked,
                "[node]",
                "min-hand-off-interval = \"40s\"\n[node]"
            ))
            .is_ok());
        // An invalid election timeout is reported alone.
        let problems = fixture.problems(&with(
            "election-timeout = \"61s\"\nmin-hand-off-interval = \"1s\"",
        ));
        assert_eq!(problems.len(), 1, "{problems:#?}");
    }

    #[test]
    fn checks_on_a_witness_are_allowed_with_a_warning() {
        let fixture = Fixture::new();
        let text = format!("{}\n[[check]]\n{TCP}\n", witness_node(&fixture, ""));
        let settings = fixture
            .load(&text)
            .expect("checks on a witness are allowed");
        assert_eq!(settings.checks.len(), 1);
        let warnings = settings.warnings();
        assert_problem(
            &warnings,
            &[
                "[[check]]",
                "this node is a witness",
                "ignored for leadership",
                "1 check(s)",
            ],
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(settings
            .summary()
            .contains("checks           1 (healthy when all pass) (ignored for leadership: this node is a witness)"));
        // On a voter, checks are no cause for a warning.
        let settings = fixture
            .load(&format!("{}\n[[check]]\n{TCP}\n", fixture.with_resources()))
            .unwrap();
        assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
    }

    #[test]
    fn summary_shows_checks_preemption_and_hooks() {
        let fixture = Fixture::new();
        let summary = fixture.load(&fixture.valid()).unwrap().summary();
        for needle in [
            "preemption       off: a recovered node does not take leadership back\n",
            "hand-off spacing at least 30s between two health or preemption hand-offs\n",
            "checks           none: this node is always healthy\n",
            "hooks            none\n",
        ] {
            assert!(
                summary.contains(needle),
                "summary lacks {needle:?}:\n{summary}"
            );
        }

        let text = replace(
            &with_checks(
                &fixture,
                &[
                    &format!("{HTTP}\nexpect-status = 204\nbody = \"ok\"\ninterval = \"2s\""),
                    &format!("{TCP}\ntimeout = \"200ms\"\nrise = 1\nfall = 5"),
                    &format!("{EXEC}\n"),
                ],
            ),
            "[node]",
            "preempt = true\npreempt-delay = \"90s\"\n[node]",
        );
        let text = format!(
            "{text}\n[hooks]\non-leader = [\"/usr/local/bin/notify\", \"leader\"]\n\
             on-fault = [\"/usr/local/bin/notify\", \"the fault\"]\ntimeout = \"5s\"\n"
        );
        let summary = fixture.load(&text).unwrap().summary();
        for needle in [
            "preemption       on: a higher-priority node takes leadership back once healthy for \
             1m 30s\n",
            "checks           3 (healthy when all pass)\n",
            "  check web      http GET http://127.0.0.1:8080/healthz, expecting 204, body \
             containing \"ok\"; every 2s, timeout 1s, rise 2, fall 3\n",
            "  check db-port  tcp connect to 127.0.0.1:5432; every 1s, timeout 200ms, rise 1, \
             fall 5\n",
            "  check replication exec run /usr/local/bin/check-replica --max-lag 5; every 1s, \
             timeout 500ms, rise 2, fall 3\n",
            "hooks            timeout 5s\n",
            "  on-leader      /usr/local/bin/notify leader\n",
            "  on-fault       /usr/local/bin/notify \"the fault\"\n",
        ] {
            assert!(
                summary.contains(needle),
                "summary lacks {needle:?}:\n{summary}"
            );
        }
        assert!(!summary.contains("on-follower"), "{summary}");
    }
}
