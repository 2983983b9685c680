//! `ha-agent run`: the daemon. One task owns the core (and through it the `RawNode`); a
//! `select!` only classifies each wake-up into an input; the core decides; [`Agent::execute`]
//! carries out its output in the order persistence requires, and starts the cloud calls the
//! core asks for as tasks that report back with their result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use ha_agent_core::{
    Call, CallKind, CallResult, CheckRule, Command, Core, CoreConfig, CoreError, HealthConfig,
    Input, Member, Notice, Output, ReconcileConfig, Role,
};

use crate::cloud::resources::{self, FloatingResource};
use crate::cloud::{self, CloudError, Identity};
use crate::config::{Secret, SecretSource, Settings};
use crate::hooks::{HookEvent, HookJob, Hooks};
use crate::logging;
use crate::probes::{self, ProbeResult};
use crate::status::{
    self, CheckReport, OperatorRequest, PeerReport, Request, ResourceReport, Response, Snapshot,
    StatusReport,
};
use crate::store::{StateStore, StoreError};
use crate::systemd::Notifier;
use crate::transport::{self, Outbox, PeerEvent, TransportIdentity, TransportTimings};

/// How long the start may wait for AWS (IMDS is bounded by its own short timeouts).
const STARTUP_AWS_DEADLINE: Duration = Duration::from_secs(20);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the Raft node: {0}")]
    Core(#[from] CoreError),
    #[error("cannot listen for peers on {address} (node.listen): {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Status(#[from] status::BindError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot learn this instance's identity: {0}")]
    Identity(#[from] cloud::imds::ImdsError),
    #[error("cannot read the cluster secret from SSM parameter {parameter} (cluster.secret-ssm-parameter): {reason}")]
    Secret { parameter: String, reason: String },
    #[error("{0}")]
    Resources(String),
    #[error(
        "no root CA certificates found on this system ({0}); the AWS SDK needs them for HTTPS: \
         install the ca-certificates package"
    )]
    NoRootCertificates(String),
}

enum Wakeup {
    Tick,
    Peer(PeerEvent),
    CallDone { call: Call, result: CallResult },
    Probe(ProbeResult),
    Advertise,
    Operator(OperatorRequest),
    Signal(&'static str),
}

/// The state the Raft loop owns.
struct Agent {
    settings: Settings,
    core: Core,
    store: StateStore,
    outbox: Outbox,
    resources: Arc<Vec<FloatingResource>>,
    calls: mpsc::Sender<(Call, CallResult)>,
    started: Instant,
    leader: Option<(u64, u64)>,
    leader_since: Option<Instant>,
    /// Last time this node heard from the leader it followed (for the failover timeline).
    last_leader_contact: Option<Instant>,
    /// When this node became leader, and how long the group had been without one.
    elected: Option<(Instant, Option<Duration>)>,
    last_contact: BTreeMap<u64, Instant>,
    connected: BTreeSet<u64>,
    shutting_down: Option<Instant>,
    status: watch::Sender<Snapshot>,
    aws_endpoint: Option<String>,
    notifier: Notifier,
    hooks: Hooks,
    /// The hook fired last, so that each transition fires once.
    last_hook: Option<(HookEvent, Option<u64>)>,
    /// The latest result of each local check.
    probes: Vec<Option<ProbeResult>>,
}

/// Runs the agent until SIGTERM or SIGINT (after handing leadership away), or an error.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    let store = StateStore::open(&settings.node.state_dir)?;
    let stored = store.load()?;
    let fresh = stored.is_none();

    let (identity, sdk) = if settings.uses_aws() {
        // The SDK's HTTPS client aborts the process when it finds no root certificates; say
        // why in plain words instead.
        let roots = rustls_native_certs::load_native_certs();
        if roots.certs.is_empty() {
            let errors: Vec<String> = roots.errors.iter().map(|e| e.to_string()).collect();
            return Err(DaemonError::NoRootCertificates(if errors.is_empty() {
                "none in the usual places".into()
            } else {
                errors.join("; ")
            }));
        }
        let identity = cloud::resolve_identity(&settings).await?;
        let sdk = cloud::sdk_config(&settings, &identity).await;
        if let Some(endpoint) = &settings.aws.endpoint_url {
            warn!(%endpoint, "every AWS call goes to this endpoint (aws.endpoint-url): an emulator, not AWS");
        }
        info!(
            instance = %identity.instance_id,
            region = %identity.region,
            interface = %identity.network_interface_id,
            private_ip = %identity.private_ip,
            "instance identity"
        );
        (Some(identity), Some(sdk))
    } else {
        (None, None)
    };
    let secret = match &settings.cluster.secret {
        SecretSource::File { secret, .. } => secret.as_bytes().to_vec(),
        SecretSource::Ssm { parameter } => {
            let sdk = sdk.as_ref().expect("an SSM secret implies AWS access");
            let fetched = cloud::within(
                Instant::now() + STARTUP_AWS_DEADLINE,
                resources::fetch_secret(sdk, parameter),
            )
            .await;
            let secret_error = |reason: String| DaemonError::Secret {
                parameter: parameter.clone(),
                reason,
            };
            match fetched {
                Some(Ok(value)) => Secret::from_parameter_value(parameter, &value)
                    .map_err(secret_error)?
                    .as_bytes()
                    .to_vec(),
                Some(Err(e)) => return Err(secret_error(e.to_string())),
                None => return Err(secret_error("no answer from SSM in time".into())),
            }
        }
    };
    let resources = match (&identity, &sdk) {
        (Some(identity), Some(sdk)) => {
            resources::build(&settings, identity, sdk).map_err(DaemonError::Resources)?
        }
        _ => Vec::new(),
    };

    let logger = logging::raft_logger();
    let core = Core::new(
        core_config(&settings, resources.len()),
        stored,
        rand::random(),
        &logger,
    )?;

    let listener = TcpListener::bind(settings.node.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            address: settings.node.listen,
            source,
        })?;
    let status_listener = status::bind(&settings.status.socket).await?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let timings = TransportTimings::new(
        settings.cluster.heartbeat_interval,
        settings.cluster.election_timeout,
    );
    let transport_identity = TransportIdentity {
        node_id: settings.node.id,
        key: Arc::from(secret),
        peers: settings.peers.iter().map(|p| (p.id, p.address)).collect(),
        timings,
    };
    let (events_tx, mut events) = mpsc::channel(4096);
    let listener_task = tokio::spawn(transport::run_listener(
        listener,
        transport_identity.clone(),
        events_tx.clone(),
    ));
    let outbox = transport::start_senders(&transport_identity, events_tx);

    let started = Instant::now();
    let aws_endpoint = settings.aws.endpoint_url.clone();
    let (status_tx, status_rx) = watch::channel(Snapshot {
        report: base_report(&settings, aws_endpoint.clone()),
        started,
        leader_since: None,
        last_contact: BTreeMap::new(),
        reachable_within: settings.cluster.election_timeout,
        lease_until: None,
        observed_at: Vec::new(),
        claimed_at: Vec::new(),
    });
    let (operator_tx, mut operator_rx) = mpsc::channel(16);
    let status_task = tokio::spawn(status::serve(status_listener, status_rx, operator_tx));
    let (probe_tx, mut probe_rx) = mpsc::channel(64);
    probes::start(&settings.checks, probe_tx);
    let hooks = Hooks::start(&settings.hooks, &settings.cluster.name, settings.node.id);
    let mut advertise = tokio::time::interval(timings.keepalive);
    advertise.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let st = core.status();
    info!(
        cluster = %settings.cluster.name,
        node = settings.node.id,
        listen = %settings.node.listen,
        term = st.term,
        commit = st.commit,
        resources = resources.len(),
        state = if fresh { "new" } else { "restored" },
        status_socket = %settings.status.socket.display(),
        "ha-agent started; not voting for one election timeout"
    );
    if let Some(identity) = &identity {
        log_identity_use(&settings, identity);
    }

    let (calls_tx, mut calls_rx) = mpsc::channel(256);
    let checks_count = settings.checks.len();
    let mut agent = Agent {
        settings,
        core,
        store,
        outbox,
        resources: Arc::new(resources),
        calls: calls_tx,
        started,
        leader: None,
        leader_since: None,
        last_leader_contact: None,
        elected: None,
        last_contact: BTreeMap::new(),
        connected: BTreeSet::new(),
        shutting_down: None,
        status: status_tx,
        aws_endpoint,
        notifier,
        hooks,
        last_hook: None,
        probes: vec![None; checks_count],
    };
    // Ready only now: the state is loaded and both sockets are bound.
    agent.notifier.ready();
    agent.notifier.status(&role_line(&agent.core.status()));
    let mut ticker = tokio::time::interval(agent.settings.cluster.heartbeat_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let result = loop {
        let wakeup = tokio::select! {
            _ = ticker.tick() => Wakeup::Tick,
            Some(event) = events.recv() => Wakeup::Peer(event),
            Some((call, result)) = calls_rx.recv() => Wakeup::CallDone { call, result },
            Some(result) = probe_rx.recv() => Wakeup::Probe(result),
            Some(request) = operator_rx.recv() => Wakeup::Operator(request),
            _ = advertise.tick() => Wakeup::Advertise,
            _ = sigterm.recv() => Wakeup::Signal("SIGTERM"),
            _ = sigint.recv() => Wakeup::Signal("SIGINT"),
        };
        match agent.on_wakeup(wakeup) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    listener_task.abort();
    status_task.abort();
    let _ = std::fs::remove_file(&agent.settings.status.socket);
    // Give the sender tasks a moment to flush the last messages (the vote or acknowledgement
    // that lets the new leader take over) before the process exits.
    drop(agent.outbox);
    tokio::time::sleep(Duration::from_millis(50)).await;
    result
}

fn log_identity_use(settings: &Settings, identity: &Identity) {
    for eip in &settings.elastic_ips {
        info!(
            resource = %eip.allocation_id,
            interface = %eip.network_interface_id.clone().unwrap_or_else(|| identity.network_interface_id.clone()),
            "floating Elastic IP"
        );
    }
    for record in &settings.route53_records {
        info!(resource = %record.name, zone = %record.hosted_zone_id, "floating Route53 record");
    }
}

impl Agent {
    /// Handles one wake-up. Returns false when the agent should exit.
    fn on_wakeup(&mut self, wakeup: Wakeup) -> Result<bool, DaemonError> {
        let now = Instant::now();
        let input = match wakeup {
            Wakeup::Tick => {
                // The watchdog is fed from the Raft loop itself: a wedged loop stops feeding it.
                self.notifier.watchdog(now.into_std());
                Some(Input::Tick)
            }
            Wakeup::Peer(PeerEvent::Message(message)) => {
                self.last_contact.insert(message.get_from(), now);
                if self.leader.is_some_and(|(_, id)| id == message.get_from()) {
                    self.last_leader_contact = Some(now);
                }
                Some(Input::Peer(message))
            }
            Wakeup::Peer(PeerEvent::Contact(peer)) => {
                self.last_contact.insert(peer, now);
                None
            }
            Wakeup::Peer(PeerEvent::Connected(peer)) => {
                self.connected.insert(peer);
                None
            }
            Wakeup::Peer(PeerEvent::Unreachable(peer)) => {
                self.connected.remove(&peer);
                Some(Input::PeerUnreachable(peer))
            }
            Wakeup::CallDone { call, result } => Some(Input::CallFinished {
                call_id: call.id,
                result,
            }),
            Wakeup::Peer(PeerEvent::Health { peer, advert }) => {
                self.last_contact.insert(peer, now);
                Some(Input::PeerHealth { peer, advert })
            }
            Wakeup::Probe(result) => {
                let input = Input::Probe {
                    check: result.check,
                    passed: result.passed,
                };
                if let Some(slot) = self.probes.get_mut(result.check) {
                    *slot = Some(result);
                }
                Some(input)
            }
            Wakeup::Advertise => {
                self.outbox.advertise(self.core.advert());
                None
            }
            Wakeup::Operator((request, reply)) => {
                let response = self.operator(request, now)?;
                let _ = reply.send(response);
                None
            }
            Wakeup::Signal(name) => {
                if self.shutting_down.is_some() {
                    warn!(
                        signal = name,
                        "second stop signal: exiting without waiting for the hand-off"
                    );
                    return Ok(false);
                }
                self.notifier.stopping();
                let grace = self.settings.cluster.election_timeout * 2;
                self.shutting_down = Some(now + grace);
                if self.core.status().role != Role::Leader {
                    info!(signal = name, "stopping");
                    return Ok(false);
                }
                info!(
                    signal = name,
                    "stopping: handing leadership to a peer first"
                );
                Some(Input::HandOff)
            }
        };
        if let Some(input) = input {
            let output = self.core.handle(self.clock_ms(now), input);
            self.execute(output)?;
        }
        self.publish();
        if let Some(deadline) = self.shutting_down {
            let st = self.core.status();
            if st.role != Role::Leader && st.leader_id.is_some_and(|id| id != st.id) {
                info!(
                    new_leader = st.leader_id,
                    term = st.term,
                    "leadership handed off; exiting"
                );
                return Ok(false);
            }
            if now >= deadline {
                warn!("leadership hand-off did not complete in time; exiting anyway");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs an operator command through the core and says whether it was accepted.
    fn operator(&mut self, request: Request, now: Instant) -> Result<Response, DaemonError> {
        let command = match request {
            Request::Status => {
                return Ok(Response::Error {
                    message: "status is not a command".into(),
                })
            }
            Request::Switchover { to } => Command::Switchover { to },
            Request::Maintenance { on } => Command::Maintenance(on),
        };
        let output = self
            .core
            .handle(self.clock_ms(now), Input::Operator(command));
        let verdict = output.notices.iter().find_map(|notice| match notice {
            Notice::CommandProposed { command: c } if *c == command => Some(Ok(())),
            Notice::CommandRefused { command: c, reason } if *c == command => {
                Some(Err(reason.clone()))
            }
            _ => None,
        });
        self.execute(output)?;
        Ok(match verdict {
            Some(Ok(())) => Response::Accepted {
                message: format!("{command:?} proposed to the group"),
            },
            Some(Err(reason)) => Response::Error { message: reason },
            None => Response::Error {
                message: "the command was neither proposed nor refused".into(),
            },
        })
    }

    /// Queues the hook for a transition, once per transition.
    fn hook(&mut self, event: HookEvent) {
        let st = self.core.status();
        // A follower hook names the leader it follows, so a new leader fires it again.
        let key = (
            event,
            (event == HookEvent::Follower)
                .then_some(st.leader_id)
                .flatten(),
        );
        if self.last_hook == Some(key) {
            return;
        }
        self.last_hook = Some(key);
        self.hooks.fire(HookJob {
            event,
            role: st.role.to_string(),
            term: st.term,
            leader_id: st.leader_id,
        });
    }

    /// `on-follower`: this node is healthy and follows a known leader.
    fn follower_hook(&mut self) {
        let st = self.core.status();
        if st.role == Role::Follower && st.healthy && st.leader_id.is_some_and(|id| id != st.id) {
            self.hook(HookEvent::Follower);
        }
    }

    /// The core's clock: milliseconds of the monotonic clock since this process started.
    fn clock_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    fn instant(&self, clock_ms: u64) -> Instant {
        self.started + Duration::from_millis(clock_ms)
    }

    /// Carries out an output: send, persist (fsync), then send what depended on the persist;
    /// then start the cloud calls.
    fn execute(&mut self, output: Output) -> Result<(), DaemonError> {
        for message in output.send {
            self.outbox.send(message);
        }
        if let Some(state) = &output.persist {
            tokio::task::block_in_place(|| self.store.save(state))?;
        }
        for message in output.send_after_persist {
            self.outbox.send(message);
        }
        for notice in output.notices {
            self.log_notice(notice);
        }
        if let Some(advert) = output.advert {
            self.outbox.advertise(advert);
        }
        for call in output.calls {
            self.start_call(call);
        }
        Ok(())
    }

    /// Runs one cloud call as a task; its result comes back through `calls`.
    fn start_call(&self, call: Call) {
        let resources = Arc::clone(&self.resources);
        let deadline = self.instant(call.deadline_ms);
        let results = self.calls.clone();
        if let Some(FloatingResource::LeaderParameter(parameter)) = resources.get(call.resource) {
            let since = self.leader_since_wall_clock();
            parameter.set_leadership(call.term, since);
        }
        tokio::spawn(async move {
            let resource = &resources[call.resource];
            let work = async {
                match call.kind {
                    CallKind::Observe => {
                        resource.observe().await.map(|holder| CallResult::Observed {
                            points_here: holder.points_here,
                            holder: holder.description,
                        })
                    }
                    CallKind::Claim => resource.claim(deadline).await.map(|()| CallResult::Claimed),
                }
            };
            let action = match call.kind {
                CallKind::Observe => "observe",
                CallKind::Claim => "claim",
            };
            let result = match cloud::within(deadline, work).await {
                Some(Ok(result)) => result,
                Some(Err(e)) => CallResult::Failed {
                    error: e.to_string(),
                },
                None => CallResult::Failed {
                    error: CloudError::deadline(action).to_string(),
                },
            };
            let _ = results.send((call, result)).await;
        });
    }

    fn leader_since_wall_clock(&self) -> String {
        let ago = self
            .leader_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        let wall = SystemTime::now()
            .checked_sub(ago)
            .unwrap_or_else(SystemTime::now);
        humantime::format_rfc3339_millis(wall).to_string()
    }

    fn resource_name(&self, index: usize) -> String {
        self.resources.get(index).map_or_else(
            || format!("#{index}"),
            |r| format!("{} {}", r.kind(), r.id()),
        )
    }

    fn log_notice(&mut self, notice: Notice) {
        let now = Instant::now();
        match notice {
            Notice::RoleChanged {
                role,
                term,
                leader_id,
            } => {
                let key = leader_id.map(|id| (term, id));
                let leaderless = self.last_leader_contact.map(|t| now - t);
                if key != self.leader {
                    self.leader = key;
                    self.leader_since = key.map(|_| now);
                    if leader_id.is_some_and(|id| id != self.settings.node.id) {
                        self.last_leader_contact = Some(now);
                    }
                }
                if role == Role::Leader {
                    self.elected = Some((now, leaderless));
                    info!(
                        role = %role,
                        term,
                        without_leader_ms = leaderless.map(|d| d.as_millis() as u64),
                        "elected leader"
                    );
                } else {
                    self.elected = None;
                    info!(role = %role, term, leader = ?leader_id, "role changed");
                }
                self.notifier.status(&role_line(&self.core.status()));
                self.follower_hook();
            }
            Notice::VoteIgnoredWhileQuiet { from, term } => {
                info!(
                    peer = from,
                    term, "ignored a vote request during the quiet period after start"
                )
            }
            Notice::HandingOff { to, reason } => {
                info!(peer = to, reason = ?reason, "handing leadership to a peer")
            }
            Notice::NoHandOffTarget { reason } => {
                warn!(reason = ?reason, "no voter peer can take leadership")
            }
            Notice::MessageRefused { from, reason } => {
                warn!(peer = from, %reason, "refused a peer message")
            }
            Notice::LeaseGained { until_ms } => {
                let since_elected = self.elected.map(|(at, _)| (now - at).as_millis() as u64);
                info!(
                    lease_ms = until_ms.saturating_sub(self.clock_ms(now)),
                    since_elected_ms = since_elected,
                    "lease acquired: may act on the cloud"
                )
            }
            Notice::LeaseLost { reason } => warn!(%reason, "lease lost: no cloud calls"),
            Notice::ClaimAccepted { resource, took_ms } => {
                info!(resource = %self.resource_name(resource), took_ms, "claim sent and accepted")
            }
            Notice::ResourceInPlace { resource, claimed } => {
                if claimed {
                    let (since_elected, since_leader_lost) = match self.elected {
                        Some((at, leaderless)) => (
                            Some((now - at).as_millis() as u64),
                            leaderless.map(|d| (d + (now - at)).as_millis() as u64),
                        ),
                        None => (None, None),
                    };
                    info!(
                        resource = %self.resource_name(resource),
                        since_elected_ms = since_elected,
                        since_leader_lost_ms = since_leader_lost,
                        "confirmed: resource points at this node"
                    );
                }
            }
            Notice::CallFailed {
                resource,
                kind,
                error,
            } => {
                warn!(resource = %self.resource_name(resource), call = ?kind, %error, "cloud call failed")
            }
            Notice::HealthChanged { healthy } => {
                if healthy {
                    info!("this node is healthy: every check passes");
                    self.follower_hook();
                } else {
                    warn!("this node is unhealthy: a check failed");
                    self.hook(HookEvent::Fault);
                }
            }
            Notice::VoteRefusedUnhealthy { from } => {
                info!(
                    peer = from,
                    "refused a vote to an unhealthy candidate while a healthy voter exists"
                )
            }
            Notice::Degraded { degraded } => {
                if degraded {
                    warn!("degraded: this leader is unhealthy and no healthy peer can take over; keeping the resources")
                } else {
                    info!("no longer degraded")
                }
            }
            Notice::CommandRefused { command, reason } => {
                warn!(command = ?command, %reason, "operator command refused")
            }
            Notice::CommandProposed { command } => {
                info!(command = ?command, "operator command proposed to the group")
            }
            Notice::MaintenanceChanged { on } => {
                warn!(
                    maintenance = on,
                    "maintenance mode changed: while on, nothing moves"
                )
            }
            Notice::AllResourcesInPlace => {
                info!("every resource points at this leader");
                self.hook(HookEvent::Leader);
            }
        }
    }

    fn publish(&mut self) {
        let st = self.core.status();
        let mut report = base_report(&self.settings, self.aws_endpoint.clone());
        report.role = st.role;
        report.term = st.term;
        report.leader_id = st.leader_id;
        report.commit_index = st.commit;
        report.quiet = st.quiet;
        report.shutting_down = self.shutting_down.is_some();
        report.healthy = st.healthy;
        report.degraded = st.degraded;
        report.maintenance = st.maintenance;
        report.leader_reason = leader_reason(&st);
        for peer in &mut report.peers {
            peer.connected = self.connected.contains(&peer.id);
            peer.matched = st.progress.get(&peer.id).map(|p| p.matched);
            peer.healthy = st.peer_health.get(&peer.id).map(|a| a.healthy);
        }
        report.checks = self
            .settings
            .checks
            .iter()
            .zip(st.checks.iter())
            .zip(self.probes.iter())
            .map(|((check, view), last)| CheckReport {
                name: check.name.clone(),
                kind: check.kind.as_str().to_string(),
                up: view.up,
                last_passed: last.as_ref().map(|r| r.passed),
                last_detail: last.as_ref().map(|r| r.detail.clone()),
                last_latency_ms: last.as_ref().map(|r| r.latency.as_millis() as u64),
                consecutive_passes: view.passes,
                consecutive_failures: view.failures,
            })
            .collect();
        let mut observed_at = Vec::new();
        let mut claimed_at = Vec::new();
        report.resources = st
            .resources
            .iter()
            .enumerate()
            .map(|(index, view)| {
                observed_at.push(view.observed_at_ms.map(|ms| self.instant(ms)));
                claimed_at.push(view.last_claim_at_ms.map(|ms| self.instant(ms)));
                let resource = &self.resources[index];
                ResourceReport {
                    kind: resource.kind().to_string(),
                    id: resource.id(),
                    holder: view.holder.clone(),
                    in_place: view.points_here,
                    observed_ago_ms: None,
                    last_claim_ago_ms: None,
                    last_claim_took_ms: view.last_claim_took_ms,
                    last_error: view.last_error.clone(),
                }
            })
            .collect();
        self.status.send_replace(Snapshot {
            report,
            started: self.started,
            leader_since: self.leader_since,
            last_contact: self.last_contact.clone(),
            reachable_within: self.settings.cluster.election_timeout,
            lease_until: st.lease_until_ms.map(|ms| self.instant(ms)),
            observed_at,
            claimed_at,
        });
    }
}

fn core_config(settings: &Settings, resources: usize) -> CoreConfig {
    let mut members = vec![Member {
        id: settings.node.id,
        role: settings.node.role,
    }];
    members.extend(settings.peers.iter().map(|p| Member {
        id: p.id,
        role: p.role,
    }));
    let aws = &settings.aws;
    CoreConfig {
        id: settings.node.id,
        members,
        priority: settings.node.priority,
        election_ticks: settings.cluster.election_ticks(),
        heartbeat_ticks: 1,
        tick_ms: settings.cluster.heartbeat_interval.as_millis() as u64,
        resources,
        reconcile: ReconcileConfig {
            call_timeout_ms: aws.call_timeout.as_millis() as u64,
            interval_ms: aws.reconcile_interval.as_millis() as u64,
            retry_min_ms: 200,
            retry_max_ms: 5_000,
            hand_off_after_ms: aws.hand_off_after.as_millis() as u64,
        },
        health: HealthConfig {
            checks: settings
                .checks
                .iter()
                .map(|c| CheckRule {
                    rise: c.rise,
                    fall: c.fall,
                })
                .collect(),
            min_hand_off_interval_ms: settings.cluster.min_hand_off_interval.as_millis() as u64,
            preempt: settings.cluster.preempt,
            preempt_delay_ms: settings.cluster.preempt_delay.as_millis() as u64,
            // The longest check interval plus one advert: when every service fails at once,
            // the peers' failures are known within it.
            confirm_ms: settings
                .checks
                .iter()
                .map(|c| c.interval.as_millis() as u64)
                .max()
                .unwrap_or(0)
                + TransportTimings::new(
                    settings.cluster.heartbeat_interval,
                    settings.cluster.election_timeout,
                )
                .keepalive
                .as_millis() as u64,
        },
    }
}

fn base_report(settings: &Settings, aws_endpoint: Option<String>) -> StatusReport {
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: settings.cluster.name.clone(),
        node_id: settings.node.id,
        node_role: settings.node.role,
        priority: settings.node.priority,
        role: Role::Follower,
        term: 0,
        leader_id: None,
        leader_for_ms: None,
        commit_index: 0,
        quiet: true,
        shutting_down: false,
        uptime_ms: 0,
        lease_remaining_ms: None,
        aws_endpoint,
        healthy: true,
        degraded: false,
        maintenance: false,
        leader_reason: None,
        checks: Vec::new(),
        peers: settings
            .peers
            .iter()
            .map(|p| PeerReport {
                id: p.id,
                address: p.address.to_string(),
                role: p.role,
                reachable: false,
                connected: false,
                last_contact_ms: None,
                matched: None,
                healthy: None,
            })
            .collect(),
        resources: Vec::new(),
    }
}

/// The `STATUS=` line systemd shows: role, leader and term.
fn role_line(st: &ha_agent_core::CoreStatus) -> String {
    match (st.role, st.leader_id) {
        (Role::Leader, _) => format!("leader, term {}", st.term),
        (role, Some(leader)) if leader != st.id => {
            format!("{role} of node {leader}, term {}", st.term)
        }
        (role, _) => format!("{role}, no leader, term {}", st.term),
    }
}

/// Why the current leader leads, as far as this node can tell.
fn leader_reason(st: &ha_agent_core::CoreStatus) -> Option<String> {
    let leader = st.leader_id?;
    if leader == st.id {
        return Some(if st.degraded {
            "degraded: unhealthy, but no healthy peer can take over".to_string()
        } else if st.healthy {
            format!("this node is healthy; elected in term {}", st.term)
        } else {
            format!(
                "elected in term {}; this node just turned unhealthy",
                st.term
            )
        });
    }
    Some(match st.peer_health.get(&leader) {
        Some(advert) if advert.healthy => {
            format!(
                "healthy, priority {}; elected in term {}",
                advert.priority, st.term
            )
        }
        Some(_) => "unhealthy: no healthy node can take over".to_string(),
        None => format!(
            "elected in term {}; its health is not known here yet",
            st.term
        ),
    })
}
