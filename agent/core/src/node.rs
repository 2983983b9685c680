//! One node of the group: the Raft state machine (raft-rs `RawNode`) and the rules ha-agent adds
//! around it. See the crate documentation for the safety argument these rules serve.

use std::collections::BTreeMap;

use raft::prelude::{ConfState, Entry, EntryType, HardState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole, Storage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::durable::DurableState;
use crate::health::{CheckRule, CheckView, Health, HealthAdvert};
use crate::lease::{lease_duration_ms, Lease};
use crate::reconcile::{
    self, Call, CallKind, CallResult, ReconcileConfig, Reconciler, ResourceView,
};
use crate::MemberRole;

/// A member of the group as the configuration names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub role: MemberRole,
}

/// Everything the core needs to know about its node and group.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This node's id.
    pub id: u64,
    /// Every member of the group, this node included.
    pub members: Vec<Member>,
    /// Election priority: among candidates with equally long logs, voters prefer higher.
    pub priority: i64,
    /// Ticks without hearing from a leader before a follower campaigns (raft randomises the
    /// actual timeout in `[election_ticks, 2 * election_ticks)`).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Length of one tick in milliseconds (the heartbeat interval).
    pub tick_ms: u64,
    /// Number of floating resources, addressed by index in calls and results.
    pub resources: usize,
    /// Timing of reconciliation.
    pub reconcile: ReconcileConfig,
    /// Health checks and how health steers leadership.
    pub health: HealthConfig,
}

/// How health steers leadership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// One rule per local check, in the order probes report them.
    pub checks: Vec<CheckRule>,
    /// Least time between two hand-offs this node starts for health or preemption.
    pub min_hand_off_interval_ms: u64,
    /// Whether a healthy node of higher priority takes leadership back.
    pub preempt: bool,
    /// How long it must have been healthy first.
    pub preempt_delay_ms: u64,
    /// An unhealthy leader hands off only to a peer whose healthy advert arrived at least this
    /// long after the leader's own failure (the longest check interval plus one advert): when
    /// every service fails at once, the peers' failures show within it, and nothing moves.
    pub confirm_ms: u64,
}

/// An operator command. Commands go through the Raft log, so every node applies them in the
/// same order and a restart replays them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// While on, the group moves no resource for any reason.
    Maintenance(bool),
    /// Planned hand-off to the named peer, or to the best healthy one.
    Switchover { to: Option<u64> },
}

impl Command {
    /// The log entry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Command::Maintenance(on) => format!("maintenance:{}", u8::from(*on)).into_bytes(),
            Command::Switchover { to } => format!("switchover:{}", to.unwrap_or(0)).into_bytes(),
        }
    }

    /// Parses a log entry; `None` for anything that is not a command.
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (name, value) = text.split_once(':')?;
        match (name, value) {
            ("maintenance", "0") => Some(Command::Maintenance(false)),
            ("maintenance", "1") => Some(Command::Maintenance(true)),
            ("switchover", id) => {
                let id: u64 = id.parse().ok()?;
                Some(Command::Switchover {
                    to: (id != 0).then_some(id),
                })
            }
            _ => None,
        }
    }
}

impl CoreConfig {
    fn role_of(&self, id: u64) -> Option<MemberRole> {
        self.members.iter().find(|m| m.id == id).map(|m| m.role)
    }
}

/// What happens to a node; the daemon classifies each wake-up into one of these.
#[derive(Clone, Debug)]
pub enum Input {
    /// One heartbeat interval passed.
    Tick,
    /// An authenticated message from a peer.
    Peer(Message),
    /// The operator (or a planned shutdown) asks this node to give up leadership.
    HandOff,
    /// The transport could not deliver to this peer.
    PeerUnreachable(u64),
    /// A cloud call finished (or reached its deadline).
    CallFinished { call_id: u64, result: CallResult },
    /// One probe of a local health check finished.
    Probe { check: usize, passed: bool },
    /// A peer advertised its health (over the authenticated transport).
    PeerHealth { peer: u64, advert: HealthAdvert },
    /// An operator command arrived on this node's status socket.
    Operator(Command),
}

/// Where this node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Leader,
    Candidate,
    Follower,
}

impl Role {
    fn of(state: StateRole) -> Role {
        match state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            StateRole::Follower => Role::Follower,
        }
    }

    /// The lower-case name used in status output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Candidate => "candidate",
            Role::Follower => "follower",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why leadership is being handed to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOffReason {
    /// The operator or a planned shutdown asked for it.
    Requested,
    /// This node is a witness: it votes but never keeps leadership.
    Witness,
    /// This node could not put its resources in place for too long.
    ResourcesFailing,
    /// This node's service is unhealthy and a healthy peer can take over.
    Unhealthy,
    /// A healthy peer of higher priority takes leadership back (`preempt`).
    Preempt,
    /// The operator asked for a switchover.
    Switchover,
}

/// Something the daemon should log or report; the core has no logger of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// This node's role, term or known leader changed.
    RoleChanged {
        role: Role,
        term: u64,
        leader_id: Option<u64>,
    },
    /// A vote request arrived during the quiet period after start and was ignored.
    VoteIgnoredWhileQuiet { from: u64, term: u64 },
    /// Leadership transfer started.
    HandingOff { to: u64, reason: HandOffReason },
    /// Leadership could not be handed off: no voter peer to take it.
    NoHandOffTarget { reason: HandOffReason },
    /// A message was refused before it reached raft.
    MessageRefused { from: u64, reason: String },
    /// The leader gained a lease (after having none).
    LeaseGained { until_ms: u64 },
    /// The leader's lease ran out or was given up.
    LeaseLost { reason: &'static str },
    /// A resource was observed in place; `claimed` when this node had to claim it first.
    ResourceInPlace { resource: usize, claimed: bool },
    /// A claim was accepted by the cloud.
    ClaimAccepted { resource: usize, took_ms: u64 },
    /// A cloud call failed.
    CallFailed {
        resource: usize,
        kind: CallKind,
        error: String,
    },
    /// This node's health flipped.
    HealthChanged { healthy: bool },
    /// A vote request from a candidate known to be unhealthy was refused while a healthy voter
    /// exists.
    VoteRefusedUnhealthy { from: u64 },
    /// The leader is unhealthy and no healthy peer can take over (or that ended).
    Degraded { degraded: bool },
    /// An operator command was refused, with the reason.
    CommandRefused { command: Command, reason: String },
    /// An operator command was put into the Raft log.
    CommandProposed { command: Command },
    /// The replicated maintenance flag changed.
    MaintenanceChanged { on: bool },
    /// Every resource was confirmed in place in this leadership (once per leadership).
    AllResourcesInPlace,
}

/// The result of one input: what to send, what to persist, in which order.
///
/// The daemon must execute it in this order: send `send`; make `persist` durable (fsync);
/// only then send `send_after_persist`. Messages in `send_after_persist` (votes, append
/// acknowledgements) promise that the state in `persist` is on disk.
#[derive(Debug, Default)]
pub struct Output {
    pub send: Vec<Message>,
    pub persist: Option<DurableState>,
    pub send_after_persist: Vec<Message>,
    /// Cloud calls to start; each must be abandoned at its deadline.
    pub calls: Vec<Call>,
    /// This node's health changed: tell the peers now (the daemon also repeats it).
    pub advert: Option<HealthAdvert>,
    pub notices: Vec<Notice>,
}

impl Output {
    /// Every message of this output in the order it may be sent.
    pub fn all_messages(&self) -> impl Iterator<Item = &Message> {
        self.send.iter().chain(self.send_after_persist.iter())
    }
}

/// How far a peer has caught up, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub matched: u64,
    pub recent_active: bool,
}

/// A snapshot of the node's state for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreStatus {
    pub id: u64,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub commit: u64,
    pub last_index: u64,
    /// True while the node still refuses votes after its start.
    pub quiet: bool,
    /// The peer leadership is being transferred to, if any.
    pub transferring_to: Option<u64>,
    /// Per-peer replication progress; only filled in on the leader.
    pub progress: BTreeMap<u64, PeerProgress>,
    /// End of the lease, if this node holds one now.
    pub lease_until_ms: Option<u64>,
    /// What this node knows of each resource.
    pub resources: Vec<ResourceView>,
    /// Whether this node's checks all pass.
    pub healthy: bool,
    pub checks: Vec<CheckView>,
    /// Each peer's latest fresh health advert.
    pub peer_health: BTreeMap<u64, HealthAdvert>,
    /// The replicated maintenance flag.
    pub maintenance: bool,
    /// The leader is unhealthy and no healthy peer can take over.
    pub degraded: bool,
}

/// Why a core could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("node id {0} is not among the configured members")]
    NotAMember(u64),
    #[error("the configuration needs at least 3 voters, it has {0}")]
    TooFewVoters(usize),
    #[error(
        "the stored state was made for members {stored:?}, but the configuration lists {configured:?}; \
         membership changes are not supported: restore the old member list, or stop every agent \
         and clear every node's state-dir to form a new group"
    )]
    MembershipMismatch {
        stored: Vec<u64>,
        configured: Vec<u64>,
    },
    #[error("raft refused the stored state: {0}")]
    Raft(#[from] raft::Error),
}

/// One node's decision core. Deterministic: the same inputs and seed give the same outputs.
pub struct Core {
    raw: RawNode<MemStorage>,
    config: CoreConfig,
    rng: ChaCha8Rng,
    /// Ticks since this core was created.
    ticks: u64,
    /// Vote requests are ignored until `ticks` reaches this (the quiet period, crate docs (a)).
    quiet_until: u64,
    /// (term, state, leader) after the last input; a change means raft reset its election timer.
    timer_key: (u64, StateRole, u64),
    /// (role, term, leader) last reported in a notice.
    reported: (Role, u64, Option<u64>),
    lease: Lease,
    /// Whether a lease was held after the last input (to report changes).
    had_lease: bool,
    reconciler: Reconciler,
    /// Whether this leadership already started a lease round after committing in its term
    /// (raft drops read requests before that, so the first round waits for the commit).
    round_after_commit: bool,
    /// The last time leadership was handed off because resources kept failing.
    last_failure_hand_off_ms: Option<u64>,
    now_ms: u64,
    health: Health,
    maintenance: bool,
    degraded: bool,
    /// The last time this node handed leadership off for health or preemption.
    last_health_hand_off_ms: Option<u64>,
    /// Whether AllResourcesInPlace was reported in this leadership.
    all_in_place_reported: bool,
    /// A transfer waiting for this node's claims in flight to end (crate docs, rule 4): the
    /// lease is already given up, but a claim sent before may still land until its deadline.
    pending_transfer: Option<(u64, HandOffReason)>,
}

impl Core {
    /// Builds a core from the configuration and the state found on disk (`None` on first start).
    ///
    /// `seed` drives every random choice (the election timeouts), so that a simulation replays
    /// exactly; the daemon passes a fresh random seed. `logger` receives raft's own log lines.
    pub fn new(
        config: CoreConfig,
        stored: Option<DurableState>,
        seed: u64,
        logger: &slog::Logger,
    ) -> Result<Core, CoreError> {
        if config.role_of(config.id).is_none() {
            return Err(CoreError::NotAMember(config.id));
        }
        if config.members.len() < 3 {
            return Err(CoreError::TooFewVoters(config.members.len()));
        }
        let mut configured: Vec<u64> = config.members.iter().map(|m| m.id).collect();
        configured.sort_unstable();

        let storage = match stored {
            None => {
                let storage =
                    MemStorage::new_with_conf_state(ConfState::from((configured.clone(), vec![])));
                // Start at term 1, not 0: raft-rs aborts when it must answer a vote request
                // at term 0 (a rejection carries the local term, which must be set).
                storage.wl().mut_hard_state().set_term(1);
                storage
            }
            Some(state) => {
                let mut stored_voters = state.conf_state.get_voters().to_vec();
                stored_voters.sort_unstable();
                if stored_voters != configured || !state.conf_state.get_learners().is_empty() {
                    return Err(CoreError::MembershipMismatch {
                        stored: stored_voters,
                        configured,
                    });
                }
                restore_storage(state)?
            }
        };

        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            pre_vote: true,
            check_quorum: true,
            priority: config.priority,
            max_size_per_msg: 64 * 1024,
            max_inflight_msgs: 64,
            ..Default::default()
        };
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, storage, logger)?;
        let quiet_until = config.election_ticks as u64;
        let timer_key = (raw.raft.term, raw.raft.state, raw.raft.leader_id);
        let reported = (
            Role::of(raw.raft.state),
            raw.raft.term,
            leader(raw.raft.leader_id),
        );
        let lease = Lease::new(lease_duration_ms(
            config.tick_ms,
            config.election_ticks as u64,
        ));
        let reconciler = Reconciler::new(config.reconcile, config.resources);
        let stale_after_ms = 3 * config.election_ticks as u64 * config.tick_ms;
        let health = Health::new(config.health.checks.clone(), stale_after_ms);
        let mut core = Core {
            raw,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            ticks: 0,
            quiet_until,
            timer_key,
            reported,
            lease,
            had_lease: false,
            reconciler,
            round_after_commit: false,
            last_failure_hand_off_ms: None,
            now_ms: 0,
            health,
            maintenance: false,
            degraded: false,
            last_health_hand_off_ms: None,
            all_in_place_reported: false,
            pending_transfer: None,
        };
        core.apply_effective_priority();
        core.randomize_election_timeout();
        Ok(core)
    }

    /// Feeds one input and returns what to do, in order (see [`Output`]).
    ///
    /// `now_ms` is the caller's monotonic clock in milliseconds; it must never go backwards.
    /// The lease and every call deadline are expressed on this clock.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Output {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Output::default();
        match input {
            Input::Tick => {
                self.ticks += 1;
                self.raw.tick();
                self.start_lease_round();
            }
            Input::Peer(message) => self.step_peer(message, &mut out),
            Input::HandOff => self.hand_off(HandOffReason::Requested, &mut out),
            Input::PeerUnreachable(id) => {
                if self.config.role_of(id).is_some() && id != self.config.id {
                    self.raw.report_unreachable(id);
                }
            }
            Input::Probe { check, passed } => {
                if self.health.probe(self.now_ms, check, passed) {
                    let healthy = self.health.healthy();
                    out.notices.push(Notice::HealthChanged { healthy });
                    out.advert = Some(self.advert());
                    self.apply_effective_priority();
                }
            }
            Input::PeerHealth { peer, advert } => {
                if peer != self.config.id && self.config.role_of(peer).is_some() {
                    self.health.peer_advert(self.now_ms, peer, advert);
                }
            }
            Input::Operator(command) => self.operator(command, &mut out),
            Input::CallFinished { call_id, result } => {
                let event = self
                    .reconciler
                    .result(self.now_ms, call_id, result, &mut self.rng);
                if let Some(event) = event {
                    out.notices.push(match event {
                        reconcile::Event::Confirmed { resource, claimed } => {
                            Notice::ResourceInPlace { resource, claimed }
                        }
                        reconcile::Event::ClaimSucceeded { resource, took_ms } => {
                            Notice::ClaimAccepted { resource, took_ms }
                        }
                        reconcile::Event::Failed {
                            resource,
                            kind,
                            error,
                        } => Notice::CallFailed {
                            resource,
                            kind,
                            error,
                        },
                    });
                }
            }
        }
        self.after_input(&mut out);
        out
    }

    /// The leader starts a heartbeat round whose majority acknowledgement extends its lease.
    /// None while a transfer is under way: the lease was given up before it started.
    fn start_lease_round(&mut self) {
        if self.raw.raft.state == StateRole::Leader
            && self.raw.raft.lead_transferee.is_none()
            && self.pending_transfer.is_none()
        {
            let context = self.lease.start_round(self.now_ms);
            self.raw.read_index(context);
        }
    }

    /// Where this node stands now.
    pub fn status(&self) -> CoreStatus {
        let raft = &self.raw.raft;
        let progress = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .filter(|(id, _)| **id != self.config.id)
                .map(|(id, pr)| {
                    (
                        *id,
                        PeerProgress {
                            matched: pr.matched,
                            recent_active: pr.recent_active,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        CoreStatus {
            id: self.config.id,
            role: Role::of(raft.state),
            term: raft.term,
            leader_id: leader(raft.leader_id),
            commit: raft.raft_log.committed,
            last_index: raft.raft_log.last_index(),
            quiet: self.ticks < self.quiet_until,
            transferring_to: raft.lead_transferee,
            progress,
            lease_until_ms: self.lease_until(),
            resources: self.reconciler.views(),
            healthy: self.health.healthy(),
            checks: self.health.checks(),
            peer_health: self
                .config
                .members
                .iter()
                .filter(|m| m.id != self.config.id)
                .filter_map(|m| self.health.peer(self.now_ms, m.id).map(|a| (m.id, a)))
                .collect(),
            maintenance: self.maintenance,
            degraded: self.degraded,
        }
    }

    /// The end of this node's lease, if it is the leader and holds one now.
    pub fn lease_until(&self) -> Option<u64> {
        if self.raw.raft.state != StateRole::Leader
            || self.raw.raft.lead_transferee.is_some()
            || self.pending_transfer.is_some()
        {
            return None;
        }
        self.lease.valid_until(self.now_ms)
    }

    /// The term of the log entry at `index`, if this node's log holds it.
    pub fn log_term(&self, index: u64) -> Option<u64> {
        let log = &self.raw.raft.raft_log;
        if index == 0 || index > log.last_index() || index < log.first_index() {
            return None;
        }
        log.term(index).ok()
    }

    /// The state as it would be written to disk now.
    pub fn durable_state(&self) -> DurableState {
        let store = self.raw.store();
        let initial = store
            .initial_state()
            .expect("memory storage always has an initial state");
        let first = store
            .first_index()
            .expect("memory storage has a first index");
        let last = store.last_index().expect("memory storage has a last index");
        let snapshot_index = first - 1;
        let snapshot_term = store
            .term(snapshot_index)
            .expect("memory storage knows the term of its snapshot");
        let entries = if last >= first {
            store
                .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
                .expect("memory storage holds its whole log")
        } else {
            Vec::new()
        };
        DurableState {
            hard_state: initial.hard_state,
            conf_state: initial.conf_state,
            snapshot_index,
            snapshot_term,
            entries,
        }
    }

    fn step_peer(&mut self, message: Message, out: &mut Output) {
        let from = message.get_from();
        let refuse = |reason: String, out: &mut Output| {
            out.notices.push(Notice::MessageRefused { from, reason });
        };
        if message.get_to() != self.config.id {
            return refuse(
                format!(
                    "addressed to node {}, this is node {}",
                    message.get_to(),
                    self.config.id
                ),
                out,
            );
        }
        if from == self.config.id || self.config.role_of(from).is_none() {
            return refuse(format!("sender {from} is not a peer of this node"), out);
        }
        if message.get_msg_type() == MessageType::MsgPropose
            && !message.get_entries().iter().all(|e| {
                e.get_entry_type() == EntryType::EntryNormal
                    && Command::decode(e.get_data()).is_some()
            })
        {
            return refuse(
                "a proposal that is not an operator command".to_string(),
                out,
            );
        }
        if matches!(
            message.get_msg_type(),
            MessageType::MsgTransferLeader | MessageType::MsgReadIndex
        ) {
            // Transfers start only here, after the lease is given up (crate docs, rule 4);
            // ha-agent forwards no reads between nodes.
            return refuse(
                format!("{:?} is not accepted from peers", message.get_msg_type()),
                out,
            );
        }
        if raft::raw_node::is_local_msg(message.get_msg_type()) {
            return refuse(
                format!("{:?} is a local message type", message.get_msg_type()),
                out,
            );
        }
        let is_vote_request = matches!(
            message.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        let is_vote_message = is_vote_request
            || matches!(
                message.get_msg_type(),
                MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
            );
        if is_vote_message && message.get_term() == 0 {
            // raft-rs aborts the process on a vote message without a term.
            return refuse("vote message without a term".to_string(), out);
        }
        if is_vote_request && message.get_context() != b"CampaignTransfer" && !self.eligible(from) {
            // Health decides before priority: while a healthy voter exists, a candidate known
            // to be unhealthy gets no vote. Transfers are exempt: this node only starts them
            // towards healthy peers.
            out.notices.push(Notice::VoteRefusedUnhealthy { from });
            return;
        }
        if is_vote_request && self.ticks < self.quiet_until {
            out.notices.push(Notice::VoteIgnoredWhileQuiet {
                from,
                term: message.get_term(),
            });
            return;
        }
        if let Err(e) = self.raw.step(message) {
            refuse(e.to_string(), out);
        }
    }

    fn hand_off(&mut self, reason: HandOffReason, out: &mut Output) {
        let target = self.hand_off_target();
        self.hand_off_to(target, reason, out);
    }

    fn hand_off_to(&mut self, target: Option<u64>, reason: HandOffReason, out: &mut Output) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.pending_transfer.is_some() {
            return;
        }
        match target {
            Some(to) => {
                // Give the lease up before the transfer: the transferee campaigns at once,
                // without waiting out the followers' check-quorum guard. Claims already in
                // flight may land until their deadlines, so the transfer itself waits for them
                // (see `start_pending_transfer`).
                self.lease.surrender();
                self.pending_transfer = Some((to, reason));
                out.notices.push(Notice::HandingOff { to, reason });
                self.start_pending_transfer();
            }
            None => out.notices.push(Notice::NoHandOffTarget { reason }),
        }
    }

    /// The voter peer best placed to take over: healthy first, then recently active, higher
    /// priority, most caught up, lowest id.
    fn hand_off_target(&self) -> Option<u64> {
        let prs = self.raw.raft.prs();
        self.config
            .members
            .iter()
            .filter(|m| m.id != self.config.id && m.role == MemberRole::Voter)
            .filter_map(|m| prs.get(m.id).map(|pr| (m.id, pr)))
            .max_by_key(|(id, pr)| {
                let advert = self.health.peer(self.now_ms, *id);
                (
                    advert.is_some_and(|a| a.healthy),
                    pr.recent_active,
                    advert.map_or(0, |a| a.priority),
                    pr.matched,
                    std::cmp::Reverse(*id),
                )
            })
            .map(|(id, _)| id)
    }

    /// Starts a pending transfer once no claim of this node can still land in the cloud.
    fn start_pending_transfer(&mut self) {
        let Some((to, _)) = self.pending_transfer else {
            return;
        };
        if self.raw.raft.state != StateRole::Leader {
            self.pending_transfer = None;
            return;
        }
        if self
            .reconciler
            .claims_in_flight_until()
            .is_some_and(|deadline| self.now_ms < deadline)
        {
            return;
        }
        self.pending_transfer = None;
        self.raw.transfer_leader(to);
    }

    /// A healthy voter peer that can take over now: fresh healthy advert, recently active.
    fn healthy_successor(&self) -> Option<u64> {
        self.hand_off_target().filter(|&id| self.peer_ready(id))
    }

    /// A peer that advertised itself healthy within the last election timeout. (Raft's own
    /// `recent_active` flag is reset at every check-quorum round, so it flickers.)
    fn peer_ready(&self, id: u64) -> bool {
        let window = self.config.election_ticks as u64 * self.config.tick_ms;
        self.health.peer(self.now_ms, id).is_some_and(|a| a.healthy)
            && self
                .health
                .peer_heard_at(id)
                .is_some_and(|at| self.now_ms.saturating_sub(at) <= window)
    }

    /// This node's advert.
    pub fn advert(&self) -> HealthAdvert {
        self.health.advert(self.now_ms, self.config.priority)
    }

    /// Whether `candidate` may be elected: unless it is *known* to be unhealthy while another
    /// voter is known to be healthy. Unknown health (no fresh advert yet) never blocks an
    /// election: liveness must not depend on adverts arriving.
    fn eligible(&self, candidate: u64) -> bool {
        let health = |id: u64| -> Option<bool> {
            if id == self.config.id {
                Some(self.health.healthy())
            } else {
                self.health.peer(self.now_ms, id).map(|a| a.healthy)
            }
        };
        if health(candidate) != Some(false) {
            return true;
        }
        !self
            .config
            .members
            .iter()
            .any(|m| m.role == MemberRole::Voter && m.id != candidate && health(m.id) == Some(true))
    }

    /// Raft's priority: the configured one while healthy, 0 while not, so that an unhealthy
    /// node never out-ranks (and so blocks) a healthy candidate.
    fn apply_effective_priority(&mut self) {
        let priority = if self.health.healthy() {
            self.config.priority
        } else {
            0
        };
        self.raw.set_priority(priority);
    }

    fn operator(&mut self, command: Command, out: &mut Output) {
        let refuse = |reason: String, out: &mut Output| {
            out.notices.push(Notice::CommandRefused { command, reason })
        };
        if let Command::Switchover { to } = command {
            if self.maintenance {
                return refuse(
                    "maintenance is on: nothing moves until it is off".into(),
                    out,
                );
            }
            if let Some(to) = to {
                match self.config.role_of(to) {
                    None => return refuse(format!("node {to} is not a member"), out),
                    Some(MemberRole::Witness) => {
                        return refuse(format!("node {to} is a witness and never leads"), out)
                    }
                    Some(MemberRole::Voter) => {}
                }
                if self.raw.raft.leader_id == to {
                    return refuse(format!("node {to} already leads"), out);
                }
                let healthy = if to == self.config.id {
                    self.health.healthy()
                } else {
                    self.health.peer(self.now_ms, to).is_some_and(|a| a.healthy)
                };
                if !healthy {
                    return refuse(format!("node {to} is not healthy (or not reachable)"), out);
                }
            }
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return refuse(
                "no leader is known: try again once the group has one".into(),
                out,
            );
        }
        match self.raw.propose(vec![], command.encode()) {
            Ok(()) => out.notices.push(Notice::CommandProposed { command }),
            Err(e) => refuse(format!("the proposal was dropped: {e}"), out),
        }
    }

    /// Leader policies that move leadership: witness, health, preemption, failing resources.
    fn leadership_policy(&mut self, out: &mut Output) {
        if self.raw.raft.state != StateRole::Leader
            || self.raw.raft.lead_transferee.is_some()
            || self.pending_transfer.is_some()
        {
            return;
        }
        if self.config.role_of(self.config.id) == Some(MemberRole::Witness) {
            return self.hand_off(HandOffReason::Witness, out);
        }
        let healthy = self.health.healthy();
        let successor = self.healthy_successor();
        let degraded = !healthy && successor.is_none();
        if degraded != self.degraded {
            self.degraded = degraded;
            out.notices.push(Notice::Degraded { degraded });
        }
        if self.maintenance {
            return;
        }
        let interval_passed = self.last_health_hand_off_ms.is_none_or(|at| {
            self.now_ms.saturating_sub(at) >= self.config.health.min_hand_off_interval_ms
        });
        let confirmed = successor.is_some_and(|id| {
            let failed_at = self.health.unhealthy_since().unwrap_or(0);
            self.health
                .peer_heard_at(id)
                .is_some_and(|at| at >= failed_at + self.config.health.confirm_ms)
        });
        if !healthy && confirmed && interval_passed {
            self.last_health_hand_off_ms = Some(self.now_ms);
            return self.hand_off_to(successor, HandOffReason::Unhealthy, out);
        }
        if healthy && self.config.health.preempt && interval_passed {
            let preemptor = self
                .config
                .members
                .iter()
                .filter(|m| m.id != self.config.id && m.role == MemberRole::Voter)
                .filter(|m| self.peer_ready(m.id))
                .filter_map(|m| self.health.peer(self.now_ms, m.id).map(|a| (m.id, a)))
                .filter(|(_, a)| {
                    a.priority > self.config.priority
                        && a.healthy_for_ms >= self.config.health.preempt_delay_ms
                })
                .max_by_key(|(id, a)| (a.priority, std::cmp::Reverse(*id)))
                .map(|(id, _)| id);
            if preemptor.is_some() {
                self.last_health_hand_off_ms = Some(self.now_ms);
                return self.hand_off_to(preemptor, HandOffReason::Preempt, out);
            }
        }
        if self.reconciler.failing_too_long(self.now_ms)
            && self.last_failure_hand_off_ms.is_none_or(|at| {
                self.now_ms.saturating_sub(at) >= self.config.reconcile.hand_off_after_ms
            })
        {
            self.last_failure_hand_off_ms = Some(self.now_ms);
            self.hand_off(HandOffReason::ResourcesFailing, out);
        }
    }

    fn after_input(&mut self, out: &mut Output) {
        self.start_pending_transfer();
        self.leadership_policy(out);
        let was_leader = self.reported.0 == Role::Leader;
        self.drain_ready(out);
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if is_leader != was_leader || self.raw.raft.term != self.reported.1 {
            // A new leadership (or its end): forget calls of the previous one, and take no
            // credit for rounds sent under it.
            self.lease.surrender();
            self.reconciler.reset();
            self.round_after_commit = false;
            self.all_in_place_reported = false;
            if !is_leader && self.degraded {
                self.degraded = false;
                out.notices.push(Notice::Degraded { degraded: false });
            }
        }
        if is_leader && !self.round_after_commit && self.raw.raft.commit_to_current_term() {
            // The first lease round of a leadership goes out as soon as raft accepts it,
            // not at the next tick.
            self.round_after_commit = true;
            self.start_lease_round();
            self.drain_ready(out);
        }
        if self.raw.raft.lead_transferee.is_some() || self.pending_transfer.is_some() {
            self.lease.surrender();
        }
        let lease = self.lease_until();
        match (self.had_lease, lease) {
            (false, Some(until_ms)) => out.notices.push(Notice::LeaseGained { until_ms }),
            (true, None) => out.notices.push(Notice::LeaseLost {
                reason: if !is_leader {
                    "no longer leader"
                } else if self.raw.raft.lead_transferee.is_some() || self.pending_transfer.is_some()
                {
                    "given up for a leadership transfer"
                } else {
                    "not renewed by a majority in time"
                },
            }),
            _ => {}
        }
        self.had_lease = lease.is_some();
        if is_leader {
            out.calls = self.reconciler.due_calls(
                self.now_ms,
                lease,
                self.raw.raft.term,
                !self.maintenance,
            );
            if !self.all_in_place_reported && self.reconciler.all_in_place() {
                self.all_in_place_reported = true;
                out.notices.push(Notice::AllResourcesInPlace);
            }
        }
        let key = (
            self.raw.raft.term,
            self.raw.raft.state,
            self.raw.raft.leader_id,
        );
        if key != self.timer_key {
            self.timer_key = key;
            self.randomize_election_timeout();
        }
        let now = (
            Role::of(self.raw.raft.state),
            self.raw.raft.term,
            leader(self.raw.raft.leader_id),
        );
        if now != self.reported {
            self.reported = now;
            out.notices.push(Notice::RoleChanged {
                role: now.0,
                term: now.1,
                leader_id: now.2,
            });
        }
    }

    /// raft-rs draws its randomised election timeout from the thread's RNG; replace each draw
    /// with one from the seeded RNG so that a simulation replays exactly. Raft resets the timer
    /// whenever term, state or leader change, which is when this is called.
    fn randomize_election_timeout(&mut self) {
        let e = self.config.election_ticks;
        let timeout = self.rng.gen_range(e..2 * e);
        self.raw.raft.set_randomized_election_timeout(timeout);
    }

    /// Runs raft-rs's Ready cycle to completion. Persistence is deferred to the daemon, so every
    /// message produced after the first state change waits for that state to be durable.
    fn drain_ready(&mut self, out: &mut Output) {
        let mut dirty = false;
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            for state in ready.take_read_states() {
                if self.raw.raft.state == StateRole::Leader {
                    self.lease.acknowledged(&state.request_ctx);
                }
            }
            let early = ready.take_messages();
            if dirty {
                out.send_after_persist.extend(early);
            } else {
                out.send.extend(early);
            }
            if !ready.snapshot().is_empty() {
                self.raw
                    .mut_store()
                    .wl()
                    .apply_snapshot(ready.snapshot().clone())
                    .expect("raft hands out only snapshots newer than the log");
                dirty = true;
            }
            if !ready.entries().is_empty() {
                self.raw
                    .mut_store()
                    .wl()
                    .append(ready.entries())
                    .expect("raft appends contiguous entries");
                dirty = true;
            }
            if let Some(hs) = ready.hs() {
                self.raw.mut_store().wl().set_hardstate(hs.clone());
                dirty = true;
            }
            out.send_after_persist
                .extend(ready.take_persisted_messages());
            self.apply(ready.take_committed_entries(), out);
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw
                    .mut_store()
                    .wl()
                    .mut_hard_state()
                    .set_commit(commit);
                dirty = true;
            }
            out.send_after_persist.extend(light.take_messages());
            self.apply(light.take_committed_entries(), out);
            self.raw.advance_apply();
        }
        if dirty {
            out.persist = Some(self.durable_state());
        }
    }

    /// Applies committed entries. Today the log carries only the empty entries that new leaders
    /// append; ha-agent proposes no commands and no membership changes.
    /// Applies committed entries: the empty entries new leaders append, and operator commands.
    /// ha-agent proposes no membership changes.
    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output) {
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.get_data().is_empty() {
                continue;
            }
            match Command::decode(entry.get_data()) {
                Some(Command::Maintenance(on)) if on != self.maintenance => {
                    self.maintenance = on;
                    out.notices.push(Notice::MaintenanceChanged { on });
                }
                Some(Command::Maintenance(_)) => {}
                Some(command @ Command::Switchover { to }) => {
                    // Only the leader of the moment acts, after checking again with its view.
                    // Entries replayed after a restart find this node a follower: no effect.
                    if self.raw.raft.state != StateRole::Leader {
                        continue;
                    }
                    if self.maintenance {
                        out.notices.push(Notice::CommandRefused {
                            command,
                            reason: "maintenance is on".into(),
                        });
                        continue;
                    }
                    let target = to.or_else(|| self.healthy_successor());
                    match target {
                        Some(id) if id == self.config.id => {}
                        Some(id) if self.peer_ready(id) => {
                            self.hand_off_to(Some(id), HandOffReason::Switchover, out)
                        }
                        _ => out.notices.push(Notice::CommandRefused {
                            command,
                            reason: "no healthy, reachable peer to take over".into(),
                        }),
                    }
                }
                None => {}
            }
        }
    }
}

fn leader(id: u64) -> Option<u64> {
    (id != raft::INVALID_ID).then_some(id)
}

fn restore_storage(state: DurableState) -> Result<MemStorage, CoreError> {
    let storage = if state.snapshot_index == 0 {
        MemStorage::new_with_conf_state(state.conf_state.clone())
    } else {
        let storage = MemStorage::new();
        let mut snapshot = raft::prelude::Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.set_index(state.snapshot_index);
        meta.set_term(state.snapshot_term);
        meta.set_conf_state(state.conf_state.clone());
        storage.wl().apply_snapshot(snapshot)?;
        storage
    };
    {
        let mut core = storage.wl();
        core.append(&state.entries)?;
        let hs: HardState = state.hard_state;
        core.set_hardstate(hs);
    }
    Ok(storage)
}
