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

use std::fmt;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
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
}

/// `[cluster]`: what every member must agree on.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub name: String,
    /// The key bytes read from `secret_file`, surrounding ASCII whitespace trimmed.
    pub secret: Secret,
    /// The key file, resolved against the config file's directory if it was relative.
    pub secret_file: PathBuf,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
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
        out.push_str(&format!(
            "secret file      {} ({} bytes)\n",
            cluster.secret_file.display(),
            cluster.secret.as_bytes().len()
        ));
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
        out
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
        if let Ok(meta) = fs::metadata(&self.cluster.secret_file) {
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                warnings.push(format!(
                    "cluster.secret-file = {} is writable by group or others (mode {:04o}): they \
                     could replace the cluster key; run `chmod go-w {}`",
                    self.cluster.secret_file.display(),
                    mode & 0o7777,
                    self.cluster.secret_file.display()
                ));
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClusterTable {
    name: Option<String>,
    secret_file: Option<PathBuf>,
    heartbeat_interval: Option<String>,
    election_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeTable {
    id: Option<i64>,
    listen: Option<String>,
    state_dir: Option<PathBuf>,
    role: Option<MemberRole>,
    priority: Option<i64>,
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
    } = file;

    // [cluster]
    let name = cluster_name(cluster.name, &mut problems);
    let secret_file = match cluster.secret_file {
        Some(path) => Some(resolve_relative(config_path, path)),
        None => {
            problems.push(format!(
                "cluster.secret-file is required: point it at the key file shared by every \
                 member, e.g. secret-file = \"/etc/ha-agent/cluster.key\", created with \
                 `{SECRET_RECIPE}` and copied to each member"
            ));
            None
        }
    };
    let secret = secret_file
        .as_deref()
        .and_then(|path| read_secret(path, &mut problems));
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

    // [[peer]]
    let peers = peer_settings(peers, &mut problems);
    check_membership(node_id, listen, role, &peers, &mut problems);

    // [status]
    let socket = status_socket(status.socket, &mut problems);

    let (
        Some(name),
        Some(secret_file),
        Some(secret),
        Some(heartbeat_interval),
        Some(election_timeout),
        Some(id),
        Some(listen),
        Some(state_dir),
        Some(priority),
        Some(socket),
    ) = (
        name,
        secret_file,
        secret,
        heartbeat_interval,
        election_timeout,
        node_id,
        listen,
        state_dir,
        priority,
        socket,
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
            secret_file,
            heartbeat_interval,
            election_timeout,
        },
        node: NodeSettings {
            id,
            listen,
            state_dir,
            role,
            priority,
        },
        peers,
        status: StatusSettings { socket },
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
    let before = problems.len();
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        problems.push(format!(
            "cluster.name = {name:?} contains {bad:?}: use only letters, digits, '.', '_' and '-'"
        ));
    }
    if name.len() > MAX_CLUSTER_NAME_LEN {
        problems.push(format!(
            "cluster.name is {} characters long: use at most {MAX_CLUSTER_NAME_LEN}",
            name.len()
        ));
    }
    (problems.len() == before).then_some(name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SHIPPED: &str = include_str!("../../packaging/ha-agent.toml");
    const SHIPPED_SECRET_FILE: &str = "/etc/ha-agent/cluster.key";
    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NQ==";

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

    #[test]
    fn shipped_example_parses_with_the_file_schema() {
        let file: FileSchema = toml::from_str(SHIPPED).expect("packaging/ha-agent.toml parses");
        assert_eq!(file.cluster.name.as_deref(), Some("web"));
        assert_eq!(
            file.cluster.secret_file.as_deref(),
            Some(Path::new(SHIPPED_SECRET_FILE))
        );
        assert!(file.peer.len() >= 2, "the example lists its peers");
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
        assert_eq!(settings.cluster.secret.as_bytes(), KEY.as_bytes());
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
        ] {
            assert!(
                SHIPPED.contains(&format!("{key} =")),
                "packaging/ha-agent.toml does not show {key}"
            );
        }
    }

    #[test]
    fn valid_three_member_config_loads_with_defaults() {
        let fixture = Fixture::new();
        let settings = fixture.load(&fixture.valid()).expect("valid config");
        assert_eq!(settings.config_path, fixture.config);
        assert_eq!(settings.cluster.name, "web");
        assert_eq!(settings.cluster.secret.as_bytes(), KEY.as_bytes());
        assert_eq!(settings.cluster.secret_file, fixture.secret);
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
        assert!(settings.warnings().is_empty(), "{:?}", settings.warnings());
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
        assert_problem(&problems, &["cluster.secret-file is required"]);
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
        assert_eq!(settings.cluster.secret_file, fixture.secret);
        assert_eq!(settings.cluster.secret.as_bytes(), KEY.as_bytes());
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
        assert_eq!(
            format!("{:?}", settings.cluster.secret),
            format!("Secret(<{} bytes, redacted>)", KEY.len())
        );
    }

    #[test]
    fn status_socket_is_found_without_the_secret_file() {
        let dir = TempDir::new();
        let text = "[cluster]\nname = \"web\"\nsecret-file = \"/nonexistent/key\"\n\
                    [node]\nid = 0\n";
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
}
