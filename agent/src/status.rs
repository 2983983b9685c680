//! The status socket: a Unix socket where the daemon answers `ha-agent status`.
//!
//! Requests and responses are JSON documents, each preceded by its length as a 4-byte
//! big-endian integer; daemon and CLI share the types below. The socket is created with mode
//! 0660, so root and members of the socket's group (`ha-agent` when installed from the
//! packages) may query it. A stale socket left by a crashed agent is replaced; a live one
//! means another agent is running, which is an error. At most [`MAX_CLIENTS`] clients are
//! served at once, each with a deadline.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

use ha_agent_core::{MemberRole, Role};

/// Clients served at once; more are refused.
pub const MAX_CLIENTS: usize = 8;
const MAX_MESSAGE: usize = 1 << 20;
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// What a client asks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Planned hand-off to the named node, or to the best healthy one.
    Switchover {
        to: Option<u64>,
    },
    /// Turn maintenance mode on or off for the whole group.
    Maintenance {
        on: bool,
    },
}

/// An operator command, passed from the status socket to the Raft loop with a way to answer.
pub type OperatorRequest = (Request, tokio::sync::oneshot::Sender<Response>);

/// What the daemon answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusReport>),
    /// An operator command was accepted into the Raft log.
    Accepted {
        message: String,
    },
    Error {
        message: String,
    },
}

/// The status of one agent, as `ha-agent status --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    pub version: String,
    pub cluster: String,
    pub node_id: u64,
    /// Whether this node may lead (`voter`) or only votes (`witness`).
    pub node_role: MemberRole,
    pub priority: i64,
    /// `leader`, `follower` or `candidate`.
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<u64>,
    /// How long the current leader has led, as seen by this node.
    pub leader_for_ms: Option<u64>,
    pub commit_index: u64,
    /// True while this node still refuses votes after its start.
    pub quiet: bool,
    /// True while a planned shutdown hands leadership away.
    pub shutting_down: bool,
    pub uptime_ms: u64,
    /// How long this node's lease still runs (leader only): it may act on the cloud.
    pub lease_remaining_ms: Option<u64>,
    /// Set when every AWS call goes to an emulator (`aws.endpoint-url`).
    pub aws_endpoint: Option<String>,
    pub peers: Vec<PeerReport>,
    /// The floating resources, as this node last observed them (only the leader observes).
    pub resources: Vec<ResourceReport>,
    /// Whether every local check passes.
    pub healthy: bool,
    /// The leader is unhealthy and no healthy peer can take over: it keeps the resources.
    pub degraded: bool,
    /// While on, the group moves no resource for any reason.
    pub maintenance: bool,
    /// Why the current leader leads, as far as this node knows.
    pub leader_reason: Option<String>,
    pub checks: Vec<CheckReport>,
}

/// One local health check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckReport {
    pub name: String,
    /// `http`, `tcp` or `exec`.
    pub kind: String,
    /// The check's state after rise/fall.
    pub up: bool,
    pub last_passed: Option<bool>,
    pub last_detail: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
}

/// One floating resource, as this node last saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceReport {
    /// `elastic-ip`, `route53-record` or `leader-parameter`.
    pub kind: String,
    pub id: String,
    /// Where it pointed when last observed.
    pub holder: Option<String>,
    /// Whether that is this node.
    pub in_place: Option<bool>,
    pub observed_ago_ms: Option<u64>,
    pub last_claim_ago_ms: Option<u64>,
    pub last_claim_took_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// One peer, as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerReport {
    pub id: u64,
    pub address: String,
    pub role: MemberRole,
    /// An authenticated frame arrived from it within the last election timeout.
    pub reachable: bool,
    /// This node's connection to it is up.
    pub connected: bool,
    pub last_contact_ms: Option<u64>,
    /// Log index replicated to it (only known on the leader).
    pub matched: Option<u64>,
    /// Its health, from its latest fresh advert (`None`: unknown).
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// What the Raft loop publishes; times are turned into ages when a client asks.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub report: StatusReport,
    pub started: Instant,
    pub leader_since: Option<Instant>,
    pub last_contact: BTreeMap<u64, Instant>,
    pub reachable_within: Duration,
    pub lease_until: Option<Instant>,
    /// Per resource: when it was last observed and last claimed.
    pub observed_at: Vec<Option<Instant>>,
    pub claimed_at: Vec<Option<Instant>>,
}

impl Snapshot {
    /// The report as of `now`.
    pub fn render(&self, now: Instant) -> StatusReport {
        let ms = |since: Instant| now.saturating_duration_since(since).as_millis() as u64;
        let mut report = self.report.clone();
        report.uptime_ms = ms(self.started);
        report.leader_for_ms = self.leader_since.map(ms);
        report.lease_remaining_ms = self
            .lease_until
            .filter(|&until| until > now)
            .map(|until| (until - now).as_millis() as u64);
        for (index, resource) in report.resources.iter_mut().enumerate() {
            resource.observed_ago_ms = self.observed_at.get(index).copied().flatten().map(ms);
            resource.last_claim_ago_ms = self.claimed_at.get(index).copied().flatten().map(ms);
        }
        for peer in &mut report.peers {
            let last = self.last_contact.get(&peer.id).copied();
            peer.last_contact_ms = last.map(ms);
            peer.reachable =
                last.is_some_and(|t| now.saturating_duration_since(t) <= self.reachable_within);
        }
        report
    }
}

/// Why the status socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another ha-agent is already serving status on {0} (status.socket); stop it, or give this agent its own socket path")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it (check status.socket)")]
    NotASocket(PathBuf),
    #[error("cannot create the status socket {path} (status.socket): {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the status socket, replacing a stale one, with mode 0660.
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(_) => {
                debug!(path = %path.display(), "removing stale status socket");
                std::fs::remove_file(path).map_err(io)?;
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent).map_err(io)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Serves clients until the task is dropped; operator commands go to `operator`.
pub async fn serve(
    listener: UnixListener,
    snapshots: watch::Receiver<Snapshot>,
    operator: tokio::sync::mpsc::Sender<OperatorRequest>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "accepting a status client failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(
                limit = MAX_CLIENTS,
                "too many status clients at once; refusing one"
            );
            continue;
        };
        let snapshots = snapshots.clone();
        let operator = operator.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match timeout(CLIENT_DEADLINE, answer(stream, &snapshots, &operator)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "status client failed"),
                Err(_) => debug!("status client timed out"),
            }
        });
    }
}

async fn answer(
    mut stream: UnixStream,
    snapshots: &watch::Receiver<Snapshot>,
    operator: &tokio::sync::mpsc::Sender<OperatorRequest>,
) -> std::io::Result<()> {
    let bytes = read_message(&mut stream).await?;
    let request: Result<Request, String> =
        serde_json::from_slice(&bytes).map_err(|e| e.to_string());
    let response = match request {
        Ok(Request::Status) => {
            Response::Status(Box::new(snapshots.borrow().render(Instant::now())))
        }
        Ok(command) => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if operator.send((command, reply)).await.is_err() {
                Response::Error {
                    message: "the agent is shutting down".into(),
                }
            } else {
                answer.await.unwrap_or_else(|_| Response::Error {
                    message: "the agent dropped the request".into(),
                })
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let bytes = serde_json::to_vec(&response).expect("status responses serialise");
    write_message(&mut stream, &bytes).await
}

async fn read_message(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds {MAX_MESSAGE}"),
        ));
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_message(stream: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_u32(bytes.len() as u32).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Why a client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no agent is running: the status socket {0} does not exist (start it with `systemctl start ha-agent`, or pass --socket/--config)")]
    NotRunning(PathBuf),
    #[error("no agent is running: nothing listens on the status socket {0} (a stale socket from a stopped agent)")]
    Stale(PathBuf),
    #[error("permission denied on the status socket {0}: run as root or as a member of the socket's group (ha-agent)")]
    Denied(PathBuf),
    #[error("talking to the agent on {path} failed: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("the agent on {path} answered with an error: {message}")]
    Agent { path: PathBuf, message: String },
}

/// Asks the agent behind `path` for its status.
pub async fn query(path: &Path) -> Result<StatusReport, QueryError> {
    match request(path, &Request::Status).await? {
        Response::Status(report) => Ok(*report),
        other => Err(QueryError::Protocol {
            path: path.to_path_buf(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

/// Sends an operator command to the agent behind `path`; returns its acceptance message.
pub async fn command(path: &Path, command: &Request) -> Result<String, QueryError> {
    match request(path, command).await? {
        Response::Accepted { message } => Ok(message),
        other => Err(QueryError::Protocol {
            path: path.to_path_buf(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

async fn request(path: &Path, request: &Request) -> Result<Response, QueryError> {
    let protocol = |reason: String| QueryError::Protocol {
        path: path.to_path_buf(),
        reason,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::NotFound => QueryError::NotRunning(path.to_path_buf()),
                ErrorKind::ConnectionRefused => QueryError::Stale(path.to_path_buf()),
                ErrorKind::PermissionDenied => QueryError::Denied(path.to_path_buf()),
                _ => protocol(e.to_string()),
            })
        }
    };
    let exchange = async {
        let request = serde_json::to_vec(request).expect("requests serialise");
        write_message(&mut stream, &request).await?;
        read_message(&mut stream).await
    };
    let bytes = timeout(CLIENT_DEADLINE, exchange)
        .await
        .map_err(|_| protocol("no answer within 2 s (is the agent wedged?)".into()))?
        .map_err(|e| protocol(e.to_string()))?;
    match serde_json::from_slice(&bytes).map_err(|e| protocol(e.to_string()))? {
        Response::Error { message } => Err(QueryError::Agent {
            path: path.to_path_buf(),
            message,
        }),
        response => Ok(response),
    }
}

/// The human form of a status report.
pub fn render_human(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if r.maintenance {
        let _ = writeln!(
            out,
            "MAINTENANCE MODE: the group moves no resource (ha-agent maintenance off to end it)"
        );
    }
    let leader = match r.leader_id {
        Some(id) if id == r.node_id => format!("node {id} (this node)"),
        Some(id) => format!("node {id}"),
        None => "none known".to_string(),
    };
    let _ = writeln!(out, "cluster   {}", r.cluster);
    let _ = writeln!(
        out,
        "node      {} ({}, priority {}){}",
        r.node_id,
        r.node_role.as_str(),
        r.priority,
        if r.shutting_down {
            ", shutting down"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "role      {}", r.role);
    let _ = writeln!(
        out,
        "health    {}{}",
        if r.healthy { "healthy" } else { "UNHEALTHY" },
        if r.degraded {
            " (DEGRADED: leading while unhealthy, no healthy peer to take over)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "term      {}", r.term);
    let _ = write!(out, "leader    {leader}");
    if let (Some(_), Some(ms)) = (r.leader_id, r.leader_for_ms) {
        let _ = write!(out, ", leading for {}", age(ms));
    }
    if let Some(reason) = &r.leader_reason {
        let _ = write!(out, " ({reason})");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "uptime    {}{}",
        age(r.uptime_ms),
        if r.quiet {
            " (quiet period: not voting yet)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "commit    {}", r.commit_index);
    if let Some(endpoint) = &r.aws_endpoint {
        let _ = writeln!(out, "aws       EMULATOR at {endpoint} (aws.endpoint-url)");
    }
    if r.role == Role::Leader {
        match r.lease_remaining_ms {
            Some(ms) => {
                let _ = writeln!(out, "lease     {ms} ms left (may act on the cloud)");
            }
            None => {
                let _ = writeln!(
                    out,
                    "lease     none (no cloud calls until a majority answers)"
                );
            }
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<8} {:<10} {:<10} LAST CONTACT",
        "PEER", "ADDRESS", "ROLE", "REACHABLE", "HEALTH"
    );
    for p in &r.peers {
        let contact = p
            .last_contact_ms
            .map_or_else(|| "never".to_string(), |ms| format!("{} ago", age(ms)));
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<8} {:<10} {:<10} {}",
            p.id,
            p.address,
            p.role.as_str(),
            if p.reachable { "yes" } else { "no" },
            match p.healthy {
                Some(true) => "healthy",
                Some(false) => "UNHEALTHY",
                None => "unknown",
            },
            contact
        );
    }
    if !r.checks.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:<6} {:<9} {:<10} LAST RESULT",
            "CHECK", "TYPE", "STATE", "LATENCY", "PASS/FAIL"
        );
        for c in &r.checks {
            let result = match (c.last_passed, &c.last_detail) {
                (Some(true), Some(d)) => format!("pass: {d}"),
                (Some(false), Some(d)) => format!("FAIL: {d}"),
                _ => "not probed yet".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<5} {:<6} {:<9} {:<10} {result}",
                c.name,
                c.kind,
                if c.up { "up" } else { "DOWN" },
                c.last_latency_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
                format!("{}/{}", c.consecutive_passes, c.consecutive_failures),
            );
        }
    }
    if !r.resources.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<17} {:<40} {:<6} {:<34} LAST CLAIM",
            "RESOURCE", "ID", "HERE", "POINTS AT (OBSERVED)"
        );
        for res in &r.resources {
            let here = match res.in_place {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let holder = match (&res.holder, res.observed_ago_ms) {
                (Some(h), Some(ms)) => format!("{h} ({} ago)", age(ms)),
                (Some(h), None) => h.clone(),
                _ if r.role == Role::Leader => "not observed yet".to_string(),
                _ => "not observed (only the leader observes)".to_string(),
            };
            let claim = match (res.last_claim_ago_ms, res.last_claim_took_ms) {
                (Some(ago), Some(took)) => format!("{} ago, took {took} ms", age(ago)),
                (Some(ago), None) => format!("{} ago, in flight", age(ago)),
                _ => "never".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<17} {:<40} {:<6} {:<34} {claim}",
                res.kind, res.id, here, holder
            );
            if let Some(error) = &res.last_error {
                let _ = writeln!(out, "  last error: {error}");
            }
        }
    }
    out
}

fn age(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            cluster: "web".into(),
            node_id: 1,
            node_role: MemberRole::Voter,
            priority: 100,
            role: Role::Leader,
            term: 4,
            leader_id: Some(1),
            leader_for_ms: None,
            commit_index: 9,
            quiet: false,
            shutting_down: false,
            uptime_ms: 0,
            lease_remaining_ms: None,
            aws_endpoint: None,
            resources: Vec::new(),
            healthy: true,
            degraded: false,
            maintenance: false,
            leader_reason: None,
            checks: Vec::new(),
            peers: vec![PeerReport {
                id: 2,
                address: "10.0.0.2:7946".into(),
                role: MemberRole::Witness,
                reachable: false,
                connected: true,
                last_contact_ms: None,
                matched: Some(9),
                healthy: None,
            }],
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json = serde_json::to_value(report()).unwrap();
        for key in ["node_id", "role", "term", "leader_id", "peers", "cluster"] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["role"], "leader");
        assert_eq!(json["peers"][0]["role"], "witness");
    }

    #[test]
    fn ages_are_computed_when_rendered() {
        let start = Instant::now();
        let snapshot = Snapshot {
            report: report(),
            started: start,
            leader_since: Some(start + Duration::from_secs(1)),
            last_contact: [(2, start + Duration::from_secs(2))].into_iter().collect(),
            reachable_within: Duration::from_secs(1),
            lease_until: Some(start + Duration::from_secs(3)),
            observed_at: Vec::new(),
            claimed_at: Vec::new(),
        };
        let r = snapshot.render(start + Duration::from_millis(2500));
        assert_eq!(r.uptime_ms, 2500);
        assert_eq!(r.leader_for_ms, Some(1500));
        assert_eq!(r.peers[0].last_contact_ms, Some(500));
        assert_eq!(r.lease_remaining_ms, Some(500));
        assert!(r.peers[0].reachable);
        let later = snapshot.render(start + Duration::from_secs(5));
        assert!(!later.peers[0].reachable);
        let text = render_human(&r);
        assert!(
            text.contains("node 1 (this node), leading for 1.5s"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_status_and_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = std::env::temp_dir().join(format!("ha-agent-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("s.sock");
        assert!(matches!(query(&path).await, Err(QueryError::NotRunning(_))));
        // A stale socket: bound, then its listener dropped.
        drop(bind(&path).await.unwrap());
        assert!(matches!(query(&path).await, Err(QueryError::Stale(_))));
        let listener = bind(&path).await.expect("a stale socket is replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let (_tx, rx) = watch::channel(Snapshot {
            report: report(),
            started: Instant::now(),
            leader_since: None,
            last_contact: BTreeMap::new(),
            reachable_within: Duration::from_secs(1),
            lease_until: None,
            observed_at: Vec::new(),
            claimed_at: Vec::new(),
        });
        let (operator, mut requests) = tokio::sync::mpsc::channel(1);
        let server = tokio::spawn(serve(listener, rx, operator));
        let answering = tokio::spawn(async move {
            if let Some((request, reply)) = requests.recv().await {
                assert_eq!(request, Request::Maintenance { on: true });
                let _ = reply.send(Response::Accepted {
                    message: "proposed".into(),
                });
            }
        });
        assert!(matches!(bind(&path).await, Err(BindError::InUse(_))));
        let got = query(&path).await.unwrap();
        assert_eq!(got.node_id, 1);
        assert_eq!(got.peers[0].last_contact_ms, None);
        let accepted = command(&path, &Request::Maintenance { on: true })
            .await
            .unwrap();
        assert_eq!(accepted, "proposed");
        answering.await.unwrap();
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
