//! `ha-agent run`: the daemon. One task owns the core (and through it the `RawNode`); a
//! `select!` only classifies each wake-up into an input; the core decides; [`Agent::execute`]
//! carries out its output in the order persistence requires.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use ha_agent_core::{
    Core, CoreConfig, CoreError, Input, Member, Notice, Output, ReconcileConfig, Role,
};

use crate::config::Settings;
use crate::logging;
use crate::status::{self, PeerReport, Snapshot, StatusReport};
use crate::store::{StateStore, StoreError};
use crate::transport::{self, Outbox, PeerEvent, TransportIdentity, TransportTimings};

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
}

enum Wakeup {
    Tick,
    Peer(PeerEvent),
    Signal(&'static str),
}

/// The state the Raft loop owns.
struct Agent {
    settings: Settings,
    core: Core,
    store: StateStore,
    outbox: Outbox,
    started: Instant,
    leader: Option<(u64, u64)>,
    leader_since: Option<Instant>,
    last_contact: BTreeMap<u64, Instant>,
    connected: BTreeSet<u64>,
    shutting_down: Option<Instant>,
    status: watch::Sender<Snapshot>,
}

/// Runs the agent until SIGTERM or SIGINT (after handing leadership away), or an error.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let store = StateStore::open(&settings.node.state_dir)?;
    let stored = store.load()?;
    let fresh = stored.is_none();
    let logger = logging::raft_logger();
    let core = Core::new(core_config(&settings), stored, rand::random(), &logger)?;

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
    let identity = TransportIdentity {
        node_id: settings.node.id,
        key: Arc::from(settings.cluster.secret.as_bytes()),
        peers: settings.peers.iter().map(|p| (p.id, p.address)).collect(),
        timings,
    };
    let (events_tx, mut events) = mpsc::channel(4096);
    let listener_task = tokio::spawn(transport::run_listener(
        listener,
        identity.clone(),
        events_tx.clone(),
    ));
    let outbox = transport::start_senders(&identity, events_tx);

    let started = Instant::now();
    let (status_tx, status_rx) = watch::channel(Snapshot {
        report: base_report(&settings),
        started,
        leader_since: None,
        last_contact: BTreeMap::new(),
        reachable_within: settings.cluster.election_timeout,
    });
    let status_task = tokio::spawn(status::serve(status_listener, status_rx));

    let status = core.status();
    info!(
        cluster = %settings.cluster.name,
        node = settings.node.id,
        listen = %settings.node.listen,
        term = status.term,
        commit = status.commit,
        state = if fresh { "new" } else { "restored" },
        status_socket = %settings.status.socket.display(),
        "ha-agent started; not voting for one election timeout"
    );

    let mut agent = Agent {
        settings,
        core,
        store,
        outbox,
        started,
        leader: None,
        leader_since: None,
        last_contact: BTreeMap::new(),
        connected: BTreeSet::new(),
        shutting_down: None,
        status: status_tx,
    };
    let mut ticker = tokio::time::interval(agent.settings.cluster.heartbeat_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let result = loop {
        let wakeup = tokio::select! {
            _ = ticker.tick() => Wakeup::Tick,
            Some(event) = events.recv() => Wakeup::Peer(event),
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

impl Agent {
    /// Handles one wake-up. Returns false when the agent should exit.
    fn on_wakeup(&mut self, wakeup: Wakeup) -> Result<bool, DaemonError> {
        let now = Instant::now();
        let input = match wakeup {
            Wakeup::Tick => Some(Input::Tick),
            Wakeup::Peer(PeerEvent::Message(message)) => {
                self.last_contact.insert(message.get_from(), now);
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
            Wakeup::Signal(name) => {
                if self.shutting_down.is_some() {
                    warn!(
                        signal = name,
                        "second stop signal: exiting without waiting for the hand-off"
                    );
                    return Ok(false);
                }
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

    /// The core's clock: milliseconds of the monotonic clock since this process started.
    fn clock_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Carries out an output: send, persist (fsync), then send what depended on the persist.
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
        Ok(())
    }

    fn log_notice(&mut self, notice: Notice) {
        match notice {
            Notice::RoleChanged {
                role,
                term,
                leader_id,
            } => {
                let key = leader_id.map(|id| (term, id));
                if key != self.leader {
                    self.leader = key;
                    self.leader_since = key.map(|_| Instant::now());
                }
                info!(role = %role, term, leader = ?leader_id, "role changed");
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
            Notice::LeaseGained { .. }
            | Notice::LeaseLost { .. }
            | Notice::ResourceInPlace { .. }
            | Notice::ClaimAccepted { .. }
            | Notice::CallFailed { .. } => {}
        }
    }

    fn publish(&mut self) {
        let st = self.core.status();
        let mut report = base_report(&self.settings);
        report.role = st.role;
        report.term = st.term;
        report.leader_id = st.leader_id;
        report.commit_index = st.commit;
        report.quiet = st.quiet;
        report.shutting_down = self.shutting_down.is_some();
        for peer in &mut report.peers {
            peer.connected = self.connected.contains(&peer.id);
            peer.matched = st.progress.get(&peer.id).map(|p| p.matched);
        }
        self.status.send_replace(Snapshot {
            report,
            started: self.started,
            leader_since: self.leader_since,
            last_contact: self.last_contact.clone(),
            reachable_within: self.settings.cluster.election_timeout,
        });
    }
}

fn core_config(settings: &Settings) -> CoreConfig {
    let mut members = vec![Member {
        id: settings.node.id,
        role: settings.node.role,
    }];
    members.extend(settings.peers.iter().map(|p| Member {
        id: p.id,
        role: p.role,
    }));
    CoreConfig {
        id: settings.node.id,
        members,
        priority: settings.node.priority,
        election_ticks: settings.cluster.election_ticks(),
        heartbeat_ticks: 1,
        tick_ms: settings.cluster.heartbeat_interval.as_millis() as u64,
        resources: 0,
        reconcile: ReconcileConfig {
            call_timeout_ms: 300,
            interval_ms: 10_000,
            retry_min_ms: 200,
            retry_max_ms: 5_000,
            hand_off_after_ms: 30_000,
        },
    }
}

fn base_report(settings: &Settings) -> StatusReport {
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
            })
            .collect(),
    }
}
