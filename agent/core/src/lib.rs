//! # ha-agent-core — the deterministic decision core of ha-agent
//!
//! This crate decides; it does not act. It owns the Raft state machine (tikv's `raft` crate,
//! `RawNode` over an in-memory log) and the rules ha-agent adds around it. It takes *inputs* — a
//! tick, an authenticated peer message, an operator request — and returns *outputs*: messages to
//! send, state to make durable first, and notices to log. It has no tokio, no sockets, no clock,
//! no file system and no randomness of its own (the caller passes a seed), which Cargo enforces
//! by not giving it those dependencies. The daemon (`ha-agent`) is a thin shell around it, and
//! the simulation harness in `tests/` drives many cores on an in-memory network.
//!
//! ## The safety argument
//!
//! ha-agent moves floating resources (an Elastic IP, a Route53 record) to the leader of the
//! group. The cloud offers no fencing token, so the only defence against two nodes fighting
//! over an address is that at most one node believes it may act at any instant. The rules
//! below, and the tests that check them, exist to make that true.
//!
//! 1. **Quorum.** Only a Raft leader acts. Raft elects at most one leader per term, because a
//!    leader needs the votes of a majority and each node votes at most once per term. Two
//!    voters cannot fail over (losing one leaves no majority), so a group has at least three
//!    voters; a two-instance deployment adds a witness that votes but never keeps leadership
//!    ([`MemberRole::Witness`]: a witness that wins an election hands leadership to a voter at
//!    once).
//!
//! 2. **Durable votes: persist before send.** Term, vote and log are made durable before any
//!    message that depends on them leaves the node. raft-rs orders its `Ready` so that
//!    messages which promise durable state (votes, append acknowledgements) come out as
//!    "persisted messages"; the core goes further and places *every* message produced after the
//!    first state change of an input behind the fsync ([`Output`] documents the order the
//!    daemon must keep). A node killed at any moment therefore restarts with every vote it ever
//!    sent, and never votes twice in one term. Stored state that is torn or corrupt is an
//!    error ([`DecodeError`]), never a silent reset, since a reset would forget a vote.
//!
//! 3. **Check quorum, pre-vote, and the quiet period.** `check_quorum` makes a leader step down
//!    when it has not heard from a majority within an election timeout, and makes a follower
//!    that heard from its leader less than an election timeout ago refuse vote requests; so
//!    no majority can elect a new leader before an election timeout has passed since the old
//!    leader last reached it. `pre_vote` keeps a node that was cut off from disrupting the
//!    group with inflated terms when it returns. One hole remains: a node that restarts has
//!    forgotten when it last heard from the leader, and would grant a vote at once. So a core
//!    ignores vote requests for one election timeout after it starts (the *quiet period*,
//!    [`Notice::VoteIgnoredWhileQuiet`]); without it, crash-restart schedules break the rule
//!    above.
//!
//!    The bound an isolated leader keeps: with check-quorum, a leader examines its followers'
//!    activity every election timeout `E` (in ticks), and steps down at the first examination
//!    that finds no majority active since the previous one. A leader cut off at tick `t`
//!    therefore stops being leader no later than `t + 2E`. The rest of the group cannot elect a
//!    replacement before `t + E` (their check-quorum lease) plus their randomised timeout. The
//!    overlap between those two windows is why the cloud-facing lease (below) is needed.
//!
//! 4. **The lease (for cloud calls).** `AssociateAddress` and a Route53 UPSERT cannot compare
//!    a Raft term, so a leader acts on the cloud only inside a lease that starts at the instant
//!    `t0` at which it *sent* a heartbeat round that a majority then acknowledged, and ends at
//!    `t0 + (E - 1 tick)·(1 - ρ) - δ` on its monotonic clock (ρ bounds the clock-rate
//!    difference between nodes, δ is a scheduling margin). Why it holds: each acknowledging
//!    follower heard from the leader after `t0`, so by rule 3 it refuses votes until at least
//!    `t0 + E` on its own clock, and no majority can form for a rival before then. A leadership
//!    transfer bypasses the followers' refusal (`MsgTimeoutNow`), so a leader gives its lease
//!    up *before* it starts one. A lease cannot stop a call already in flight, so a leader
//!    never starts a cloud call whose deadline runs past its lease's end. The floating
//!    resources and this lease land together; until then no node acts on the cloud.
//!
//! 5. **Level-triggered.** A leader inside its lease reconciles: it observes who holds each
//!    resource and claims it again if it is not itself; one claim at promotion is never
//!    assumed to be enough.
//!
//! 6. **Crash = exit.** The agent is built with `panic = "abort"`; systemd restarts it. The
//!    `expect`s in this crate mark broken invariants of raft's in-memory storage, where
//!    stopping is the only safe answer.
//!
//! 7. **Health steers leadership.** A node is healthy when all its checks pass (rise/fall
//!    hysteresis). Nodes advertise their health to each other; while a voter is known to be
//!    healthy, a candidate known to be unhealthy gets no vote, and an unhealthy node's raft
//!    priority drops to 0 so that it never out-ranks a healthy candidate. Unknown health never
//!    blocks an election. An unhealthy leader hands off only to a peer whose healthy advert
//!    arrived after a confirmation delay (so a failure of every service at once moves
//!    nothing), at most once per `min-hand-off-interval`; with no healthy peer it stays,
//!    degraded. Maintenance (in the Raft log) stops every claim and every health hand-off.
//!
//! The simulation harness (`tests/simulation.rs`) checks these rules over thousands of seeded
//! schedules with message loss, partitions, pauses, clock drift, crash-restarts that keep only
//! what was made durable, failing cloud calls and scripted health.
//!
//! ## Departures from the design notes, and limits
//!
//! - The lease rounds use raft-rs' `read_index` with `ReadOnlyOption::Safe` (heartbeats that
//!   carry a context), which gives exactly "a round a majority acknowledged" without a second
//!   heartbeat mechanism.
//! - A transfer waits for the deadlines of the leader's claims in flight, not only for the
//!   lease surrender: the simulation showed that a surrender alone lets the old leader's last
//!   claim land after the new leader's first.
//! - Health is shared through authenticated adverts on the peer transport, not through the
//!   Raft log: it changes often and needs no agreement, only freshness. Operator commands
//!   (maintenance, switchover) do go through the log.
//! - The Route53 compare-and-set (a TXT record holding the term) is not implemented; like the
//!   Elastic IP, Route53 relies on the lease and on reconciliation.
//! - The log is never compacted and the state file is rewritten whole on every change. The
//!   log only grows by one entry per election or operator command, so this stays small for
//!   years of normal operation; compaction with snapshots is future work.
//! - Checks start down, so at a cold start of the whole group the first leader may be elected
//!   before anyone's checks have risen and then hand off once a peer is healthy first.

mod durable;
mod health;
mod lease;
mod node;
mod reconcile;

pub use durable::{DecodeError, DurableState};
pub use health::{CheckRule, CheckView, HealthAdvert};
pub use lease::{lease_duration_ms, CLOCK_RATE_BOUND, SCHEDULING_MARGIN_MS};
pub use node::{
    Command, Core, CoreConfig, CoreError, CoreStatus, HandOffReason, HealthConfig, Input, Member,
    Notice, Output, PeerProgress, Role,
};
/// The raft message type carried between peers.
pub use raft::prelude::Message;
pub use reconcile::{Call, CallKind, CallResult, ReconcileConfig, ResourceView};

/// Whether a member of the group may keep leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberRole {
    /// Votes and may lead.
    Voter,
    /// Votes but never keeps leadership: it hands it to a voter at once.
    Witness,
}

impl MemberRole {
    /// The lower-case name used in configuration and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Witness => "witness",
        }
    }
}

/// Encodes a raft message for the wire.
pub fn encode_message(message: &Message) -> Vec<u8> {
    use protobuf::Message as _;
    message
        .write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
}

/// Decodes a raft message received from an authenticated peer. Callers authenticate and
/// size-limit the frame first (protobuf 2.x has decode advisories; see design notes).
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    use protobuf::Message as _;
    Message::parse_from_bytes(bytes).map_err(|e| e.to_string())
}
