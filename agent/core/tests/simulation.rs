//! The simulation harness: many cores on an in-memory network and a fake cloud, driven by one
//! seeded RNG in simulated real time (milliseconds).
//!
//! Each node has its own monotonic clock, running at a rate within ±2 % of real time (inside
//! the ±5 % the lease assumes), restarting from zero at every process start as the daemon's
//! does. Ticks come every 100 ms of a node's clock, sometimes late; messages take 1–10 ms,
//! sometimes 60; cloud calls take 5–250 ms and may fail. Each schedule builds a group (three
//! voters, two voters and a witness, or five voters, with random priorities, and one to three
//! floating resources) and runs a sequence of phases:
//!
//! - **chaos**: message loss, link cuts, isolations, crashes (also between sending and
//!   persisting) and restarts from what was made durable, pauses (SIGSTOP), failing and slow
//!   cloud calls;
//! - **heal**: everything restored; within [`LIVENESS_BOUND_MS`] every node follows one voter
//!   leader and every resource in the fake cloud points at it, and then stays there;
//! - **isolate leader**: the leader is cut off; it steps down within two election timeouts of
//!   its own ticks, and the rest elect a new leader;
//! - **crash leader**, **pause leader**: the rest elect a new leader.
//!
//! After every event the harness checks: at most one leader per term; no node grants its vote
//! to two candidates in one term (across restarts); committed entries agree everywhere and
//! every new leader holds them all; no two nodes hold a lease at the same real instant; every
//! claim is issued inside its issuer's lease with a deadline inside it, and claims by two
//! nodes never overlap in real time.
//!
//! A failure panics with the seed. Replay one seed with
//! `SIM_SEED=1234 cargo test -p ha-agent-core --test simulation -- replay --nocapture`;
//! run more with `SIM_SCHEDULES=20000`.

use std::collections::{BTreeMap, BTreeSet};

use ha_agent_core::{
    Call, CallKind, CallResult, CheckRule, Command, Core, CoreConfig, DurableState, HealthAdvert,
    HealthConfig, Input, Member, MemberRole, Message, Notice, Output, ReconcileConfig, Role,
};
use raft::prelude::MessageType;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TICK_MS: u64 = 100;
/// Election timeout in ticks, as at the default settings (1 s / 100 ms).
const ELECTION_TICKS: usize = 10;
/// After healing, a leader and converged resources must exist within this long.
const LIVENESS_BOUND_MS: u64 = 15_000;
/// An isolated leader steps down within this many of its own ticks: check-quorum examines
/// followers every election timeout, and the first examination covering only time after the
/// cut finds no majority (crate docs, rule 3); one tick of slack for where the cut falls.
const STEP_DOWN_TICKS: u64 = 2 * ELECTION_TICKS as u64 + 1;
/// Clock rates differ from real time by at most this (the lease assumes 5 %).
const MAX_DRIFT: f64 = 0.02;
const MAX_EVENTS_PER_SCHEDULE: u64 = 20_000_000;
/// Health: one check probed every PROBE_MS, flipping after RISE passes or FALL failures.
const PROBE_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Peers re-advertise their health this often.
const ADVERT_MS: u64 = 250;
/// Least time between two health hand-offs by one node.
const MIN_HAND_OFF_MS: u64 = 5_000;
/// An unhealthy leader waits this long for a fresh advert from its successor (one probe interval
/// and one advert).
const CONFIRM_MS: u64 = PROBE_MS + ADVERT_MS;
/// An unhealthy leader with a healthy peer hands off within `FALL` probes, the confirmation,
/// one more advert, and one transfer; this is that bound with room for late ticks and delays.
const UNHEALTHY_HAND_OFF_BOUND_MS: u64 = FALL as u64 * PROBE_MS + CONFIRM_MS + ADVERT_MS + 1_500;

fn reconcile_config() -> ReconcileConfig {
    ReconcileConfig {
        call_timeout_ms: 300,
        interval_ms: 1_000,
        retry_min_ms: 100,
        retry_max_ms: 2_000,
        hand_off_after_ms: 10_000,
    }
}

#[derive(Debug)]
enum Event {
    Tick {
        node: u64,
        incarnation: u64,
    },
    Deliver(Message),
    CallDone {
        node: u64,
        incarnation: u64,
        call: Call,
        result: CallResult,
    },
    CloudEffect {
        node: u64,
        resource: usize,
    },
    Restart {
        node: u64,
    },
    Probe {
        node: u64,
        incarnation: u64,
    },
    /// A node's periodic health advert to its peers.
    Advertise {
        node: u64,
        incarnation: u64,
    },
    /// An advert in flight.
    Advert {
        from: u64,
        to: u64,
        advert: HealthAdvert,
    },
}

struct SimNode {
    id: u64,
    config: CoreConfig,
    core: Option<Core>,
    /// What the node made durable: all it keeps across a crash.
    disk: Option<DurableState>,
    incarnation: u64,
    /// Real time at which the current process started (its clock reads 0 then).
    boot_ms: u64,
    drift: f64,
    paused_until: u64,
    ticks: u64,
    /// Real time until which this node's last lease ran (as the node computed it).
    lease_end_real: u64,
    /// Real end of this node's last claim window.
    claim_end_real: u64,
    /// Whether the node's service passes its health check (scripted by the phases).
    service_up: bool,
    /// The node's own health as its core last reported it, and since when (real time).
    healthy: bool,
    health_since: u64,
}

impl SimNode {
    fn is_witness(&self) -> bool {
        self.config
            .members
            .iter()
            .any(|m| m.id == self.id && m.role == MemberRole::Witness)
    }

    fn local(&self, real: u64) -> u64 {
        ((real - self.boot_ms) as f64 * (1.0 + self.drift)) as u64
    }

    /// Latest real instant at which this node's clock still reads below `local`.
    fn real(&self, local: u64) -> u64 {
        self.boot_ms + (local as f64 / (1.0 + self.drift)).ceil() as u64
    }
}

#[derive(Default, Clone)]
struct Stats {
    events: u64,
    crashes: u64,
    crashes_before_persist: u64,
    pauses: u64,
    elections: u64,
    witness_elections: u64,
    isolations: u64,
    claims: u64,
    failed_calls: u64,
    worst_convergence_ms: u64,
    worst_step_down_ticks: u64,
    flap_hand_offs: u64,
    maintenance_phases: u64,
}

struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    logger: slog::Logger,
    nodes: Vec<SimNode>,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    cut: BTreeSet<(u64, u64)>,
    loss: f64,
    crash_rate: f64,
    call_failure_rate: f64,
    /// Who each resource points at in the fake cloud.
    cloud: Vec<Option<u64>>,
    leader_of_term: BTreeMap<u64, u64>,
    vote_of: BTreeMap<(u64, u64), u64>,
    committed_term: BTreeMap<u64, u64>,
    stats: Stats,
    /// Print every notice (`SIM_TRACE=1`, with `replay`).
    trace: bool,
    /// No partitions, crashes or pauses are active: health rules are checked strictly.
    calm: bool,
    maintenance_claims: u64,
    hand_offs: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let members: Vec<Member> = match rng.gen_range(0..3) {
            0 => (1..=3).map(voter).collect(),
            1 => vec![
                voter(1),
                voter(2),
                Member {
                    id: 3,
                    role: MemberRole::Witness,
                },
            ],
            _ => (1..=5).map(voter).collect(),
        };
        let resources = rng.gen_range(1..=3);
        let nodes = members
            .iter()
            .map(|m| {
                let priority = match m.role {
                    MemberRole::Witness => 0,
                    MemberRole::Voter => *[100, 100, 50, 150].choose(&mut rng).unwrap(),
                };
                SimNode {
                    id: m.id,
                    config: CoreConfig {
                        id: m.id,
                        members: members.clone(),
                        priority,
                        election_ticks: ELECTION_TICKS,
                        heartbeat_ticks: 1,
                        tick_ms: TICK_MS,
                        resources,
                        reconcile: reconcile_config(),
                        health: HealthConfig {
                            checks: vec![CheckRule {
                                rise: RISE,
                                fall: FALL,
                            }],
                            min_hand_off_interval_ms: MIN_HAND_OFF_MS,
                            preempt: false,
                            preempt_delay_ms: 0,
                            confirm_ms: CONFIRM_MS,
                        },
                    },
                    core: None,
                    disk: None,
                    incarnation: 0,
                    boot_ms: 0,
                    drift: rng.gen_range(-MAX_DRIFT..MAX_DRIFT),
                    paused_until: 0,
                    ticks: 0,
                    lease_end_real: 0,
                    claim_end_real: 0,
                    service_up: true,
                    healthy: false,
                    health_since: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            nodes,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss: 0.0,
            crash_rate: 0.0,
            call_failure_rate: 0.0,
            cloud: vec![None; resources],
            leader_of_term: BTreeMap::new(),
            vote_of: BTreeMap::new(),
            committed_term: BTreeMap::new(),
            stats: Stats::default(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            calm: false,
            maintenance_claims: 0,
            hand_offs: 0,
        };
        for id in sim.ids() {
            let at = sim.rng.gen_range(0..50);
            sim.schedule(at, Event::Restart { node: id });
        }
        sim
    }

    fn fail(&self, what: String) -> ! {
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.core {
                Some(c) => format!("{:?}", c.status()),
                None => format!("node {} down", n.id),
            })
            .collect();
        panic!(
            "simulation seed {} failed at {} ms: {what}\ncloud: {:?}\nnodes:\n  {}\nreplay: SIM_SEED={} cargo test -p ha-agent-core --test simulation -- replay --nocapture",
            self.seed,
            self.now,
            self.cloud,
            states.join("\n  "),
            self.seed
        );
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: u64) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn is_up(&self, id: u64) -> bool {
        self.node(id).core.is_some()
    }

    fn status(&self, id: u64) -> Option<ha_agent_core::CoreStatus> {
        self.node(id).core.as_ref().map(|c| c.status())
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), event);
    }

    fn start(&mut self, id: u64) {
        let seed = self.rng.gen();
        let now = self.now;
        let logger = self.logger.clone();
        let node = self.node_mut(id);
        match Core::new(node.config.clone(), node.disk.clone(), seed, &logger) {
            Ok(core) => {
                node.core = Some(core);
                node.incarnation += 1;
                node.boot_ms = now;
                node.ticks = 0;
                let incarnation = node.incarnation;
                let first = (TICK_MS as f64 / (1.0 + node.drift)) as u64;
                node.healthy = false;
                node.health_since = now;
                self.schedule(
                    now + first,
                    Event::Tick {
                        node: id,
                        incarnation,
                    },
                );
                self.schedule(
                    now + PROBE_MS / 2,
                    Event::Probe {
                        node: id,
                        incarnation,
                    },
                );
                self.schedule(
                    now + ADVERT_MS / 2,
                    Event::Advertise {
                        node: id,
                        incarnation,
                    },
                );
            }
            Err(e) => self.fail(format!(
                "node {id} cannot restart from its durable state: {e}"
            )),
        }
    }

    fn crash(&mut self, id: u64, down_for: Option<u64>) {
        let now = self.now;
        let node = self.node_mut(id);
        if node.core.is_none() {
            return;
        }
        node.core = None;
        node.lease_end_real = node.lease_end_real.min(now);
        self.stats.crashes += 1;
        if let Some(down_for) = down_for {
            self.schedule(now + down_for, Event::Restart { node: id });
        }
    }

    fn feed(&mut self, id: u64, input: Input) {
        let now = self.now;
        let node = self.node_mut(id);
        let local = node.local(now);
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let out = core.handle(local, input);
        self.observe_lease(id);
        self.execute(id, out);
        self.check();
    }

    /// Carries out an output the way the daemon does, with a chance of crashing between
    /// sending and persisting.
    fn execute(&mut self, id: u64, out: Output) {
        for m in &out.send {
            self.record_sent(id, m);
        }
        self.enqueue(out.send);
        if out.persist.is_some() && self.crash_rate > 0.0 && self.rng.gen_bool(self.crash_rate) {
            self.stats.crashes_before_persist += 1;
            let down_for = self.rng.gen_range(10..3_000);
            self.crash(id, Some(down_for));
            return;
        }
        if let Some(state) = out.persist {
            self.node_mut(id).disk = Some(state);
        }
        for m in &out.send_after_persist {
            self.record_sent(id, m);
        }
        self.enqueue(out.send_after_persist);
        for notice in &out.notices {
            if let Notice::CallFailed { .. } = notice {
                self.stats.failed_calls += 1;
            }
            if self.trace {
                println!("{:>8} ms  node {id}: {notice:?}", self.now);
            }
            match notice {
                Notice::HealthChanged { healthy } => {
                    let now = self.now;
                    let node = self.node_mut(id);
                    node.healthy = *healthy;
                    node.health_since = now;
                }
                Notice::HandingOff { .. } => self.hand_offs += 1,
                _ => {}
            }
        }
        if let Some(advert) = out.advert {
            self.broadcast_advert(id, advert);
        }
        for call in out.calls {
            self.start_call(id, call);
        }
    }

    fn broadcast_advert(&mut self, from: u64, advert: HealthAdvert) {
        for to in self.ids() {
            if to != from {
                let latency = self.rng.gen_range(1..10);
                self.schedule(self.now + latency, Event::Advert { from, to, advert });
            }
        }
    }

    /// Every running node has applied maintenance on.
    fn maintenance_everywhere(&self) -> bool {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .all(|c| c.status().maintenance)
    }

    fn enqueue(&mut self, messages: Vec<Message>) {
        for m in messages {
            let latency = if self.rng.gen_bool(0.05) {
                60
            } else {
                self.rng.gen_range(1..10)
            };
            self.schedule(self.now + latency, Event::Deliver(m));
        }
    }

    /// A cloud call: the fake cloud applies a claim at some instant before the caller gives
    /// up on it (or not at all if it fails), and answers at once or at the deadline.
    fn start_call(&mut self, id: u64, call: Call) {
        let node = self.node(id);
        let deadline_real = node.real(call.deadline_ms);
        let incarnation = node.incarnation;
        if call.kind == CallKind::Claim {
            self.stats.claims += 1;
            if self.maintenance_everywhere() {
                self.maintenance_claims += 1;
            }
            self.check_claim(id, deadline_real);
        }
        let latency = if self.rng.gen_bool(0.1) {
            self.rng.gen_range(100..600)
        } else {
            self.rng.gen_range(5..60)
        };
        let done_at = (self.now + latency).min(deadline_real);
        let fails = self.call_failure_rate > 0.0 && self.rng.gen_bool(self.call_failure_rate);
        let timed_out = self.now + latency > deadline_real;
        let result = if fails {
            CallResult::Failed {
                error: "injected 503".into(),
            }
        } else if timed_out {
            CallResult::Failed {
                error: "deadline".into(),
            }
        } else {
            match call.kind {
                CallKind::Observe => {
                    let holder = self.cloud[call.resource];
                    CallResult::Observed {
                        points_here: holder == Some(id),
                        holder: format!("{holder:?}"),
                    }
                }
                CallKind::Claim => CallResult::Claimed,
            }
        };
        if call.kind == CallKind::Claim && (!fails || self.rng.gen_bool(0.3)) {
            // A claim takes effect somewhere inside its window, even when its caller hears
            // of a failure (a timeout, or an error after the change was made).
            let effect_at = self.rng.gen_range(self.now..=done_at);
            self.schedule(
                effect_at,
                Event::CloudEffect {
                    node: id,
                    resource: call.resource,
                },
            );
        }
        self.schedule(
            done_at,
            Event::CallDone {
                node: id,
                incarnation,
                call,
                result,
            },
        );
    }

    /// Claims are issued inside the issuer's lease, and never overlap another node's.
    fn check_claim(&mut self, id: u64, deadline_real: u64) {
        let lease_end = self.node(id).lease_end_real;
        if deadline_real > lease_end {
            self.fail(format!(
                "node {id} issued a claim ending at {deadline_real} ms, after its lease ({lease_end} ms)"
            ));
        }
        for other in &self.nodes {
            if other.id != id && other.claim_end_real > self.now {
                self.fail(format!(
                    "node {id} claims while node {}'s claim window runs until {} ms",
                    other.id, other.claim_end_real
                ));
            }
        }
        let node = self.node_mut(id);
        node.claim_end_real = node.claim_end_real.max(deadline_real);
    }

    /// Records where the node's lease ends in real time and checks no other holds one.
    fn observe_lease(&mut self, id: u64) {
        let now = self.now;
        let node = self.node(id);
        let end = node
            .core
            .as_ref()
            .and_then(|c| c.lease_until())
            .map(|local_end| node.real(local_end));
        match end {
            Some(end) => {
                for other in &self.nodes {
                    if other.id != id && other.lease_end_real > now {
                        self.fail(format!(
                            "nodes {id} and {} hold leases at the same time (until {end} and {} ms)",
                            other.id, other.lease_end_real
                        ));
                    }
                }
                self.node_mut(id).lease_end_real = end;
            }
            None => {
                let node = self.node_mut(id);
                node.lease_end_real = node.lease_end_real.min(now);
            }
        }
    }

    fn record_sent(&mut self, from: u64, m: &Message) {
        if m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.get_reject() {
            let key = (from, m.get_term());
            match self.vote_of.get(&key) {
                Some(&earlier) if earlier != m.get_to() => self.fail(format!(
                    "node {from} voted for {earlier} and for {} in term {}",
                    m.get_to(),
                    m.get_term()
                )),
                _ => {
                    self.vote_of.insert(key, m.get_to());
                }
            }
        }
    }

    /// Runs the next event. Events for a paused node wait until it resumes.
    fn step(&mut self) {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            self.fail("the event queue ran dry".into());
        };
        self.now = at;
        self.stats.events += 1;
        if self.stats.events > MAX_EVENTS_PER_SCHEDULE {
            self.fail("too many events: a message storm?".into());
        }
        let target = match &event {
            Event::Tick { node, .. }
            | Event::CallDone { node, .. }
            | Event::Probe { node, .. }
            | Event::Advertise { node, .. } => Some(*node),
            Event::Deliver(m) => Some(m.get_to()),
            Event::Advert { to, .. } => Some(*to),
            Event::CloudEffect { .. } | Event::Restart { .. } => None,
        };
        if let Some(id) = target {
            let until = self.node(id).paused_until;
            if until > self.now {
                self.schedule(until, event);
                return;
            }
        }
        match event {
            Event::Restart { node } => {
                if !self.is_up(node) {
                    self.start(node);
                }
            }
            Event::Tick { node, incarnation } => {
                let (alive, drift) = {
                    let n = self.node(node);
                    (n.core.is_some() && n.incarnation == incarnation, n.drift)
                };
                if !alive {
                    return;
                }
                let late = if self.rng.gen_bool(0.05) {
                    self.rng.gen_range(5..40)
                } else {
                    0
                };
                let next = (TICK_MS as f64 / (1.0 + drift)) as u64 + late;
                self.node_mut(node).ticks += 1;
                self.schedule(self.now + next, Event::Tick { node, incarnation });
                self.feed(node, Input::Tick);
            }
            Event::Deliver(m) => {
                let (from, to) = (m.get_from(), m.get_to());
                if self.cut.contains(&(from, to)) || !self.is_up(to) {
                    return;
                }
                if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                    return;
                }
                self.feed(to, Input::Peer(m));
            }
            Event::CallDone {
                node,
                incarnation,
                call,
                result,
            } => {
                if self.node(node).incarnation == incarnation {
                    self.feed(
                        node,
                        Input::CallFinished {
                            call_id: call.id,
                            result,
                        },
                    );
                }
            }
            Event::CloudEffect { node, resource } => {
                self.cloud[resource] = Some(node);
            }
            Event::Probe { node, incarnation } => {
                let n = self.node(node);
                if n.core.is_none() || n.incarnation != incarnation {
                    return;
                }
                let passed = n.service_up;
                let next = (PROBE_MS as f64 / (1.0 + n.drift)) as u64;
                self.schedule(self.now + next, Event::Probe { node, incarnation });
                self.feed(node, Input::Probe { check: 0, passed });
            }
            Event::Advertise { node, incarnation } => {
                let n = self.node(node);
                if n.core.is_none() || n.incarnation != incarnation {
                    return;
                }
                let advert = n.core.as_ref().unwrap().advert();
                let next = (ADVERT_MS as f64 / (1.0 + n.drift)) as u64;
                self.schedule(self.now + next, Event::Advertise { node, incarnation });
                self.broadcast_advert(node, advert);
            }
            Event::Advert { from, to, advert } => {
                if self.cut.contains(&(from, to)) || !self.is_up(to) {
                    return;
                }
                if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                    return;
                }
                self.feed(to, Input::PeerHealth { peer: from, advert });
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= until)
        {
            self.step();
        }
        self.now = until;
    }

    /// The safety invariants on terms, votes and the log, checked after every event.
    fn check(&mut self) {
        let leaders: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| (n.id, c.status())))
            .filter(|(_, s)| s.role == Role::Leader)
            .map(|(id, s)| (s.term, id))
            .collect();
        for (term, id) in leaders {
            match self.leader_of_term.get(&term) {
                Some(&other) if other != id => {
                    self.fail(format!("two leaders in term {term}: {other} and {id}"))
                }
                Some(_) => {}
                None => {
                    self.leader_of_term.insert(term, id);
                    self.stats.elections += 1;
                    self.check_promotion_is_healthy(id);
                    if self.node(id).is_witness() {
                        self.stats.witness_elections += 1;
                    }
                    self.check_leader_completeness(id);
                }
            }
        }
        for id in self.ids() {
            let Some(st) = self.status(id) else { continue };
            let known = self.committed_term.keys().next_back().copied().unwrap_or(0);
            for index in 1..=st.commit {
                let Some(term) = self.node(id).core.as_ref().unwrap().log_term(index) else {
                    continue;
                };
                match self.committed_term.get(&index) {
                    Some(&t) if t != term => self.fail(format!(
                        "node {id} has term {term} at committed index {index}, others committed term {t}"
                    )),
                    Some(_) => {}
                    None if index > known => {
                        self.committed_term.insert(index, term);
                    }
                    None => {}
                }
            }
        }
    }

    /// While nothing but health is failing, no node that has been unhealthy for a while is
    /// elected when another voter has been healthy for a while (adverts need a moment).
    fn check_promotion_is_healthy(&self, id: u64) {
        if !self.calm {
            return;
        }
        let settled = |n: &SimNode| self.now.saturating_sub(n.health_since) >= 1_000;
        let leader = self.node(id);
        if leader.healthy || !settled(leader) {
            return;
        }
        if let Some(healthy) = self
            .nodes
            .iter()
            .find(|n| n.id != id && !n.is_witness() && n.core.is_some() && n.healthy && settled(n))
        {
            self.fail(format!(
                "unhealthy node {id} was elected while voter {} was healthy",
                healthy.id
            ));
        }
    }

    fn check_leader_completeness(&self, id: u64) {
        let core = self.node(id).core.as_ref().unwrap();
        for (&index, &term) in &self.committed_term {
            if core.log_term(index) != Some(term) {
                self.fail(format!(
                    "new leader {id} lacks committed entry {index} (term {term}); has {:?}",
                    core.log_term(index)
                ));
            }
        }
    }

    fn current_leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// The nodes in `group` agree on one voter leader among them.
    fn agreed_leader(&self, group: &[u64]) -> Option<u64> {
        let statuses: Vec<_> = group.iter().map(|&id| self.status(id)).collect();
        let first = statuses.first()?.as_ref()?.leader_id?;
        if !group.contains(&first) || self.node(first).is_witness() {
            return None;
        }
        statuses
            .iter()
            .all(|s| {
                s.as_ref().is_some_and(|s| {
                    s.leader_id == Some(first) && (s.role == Role::Leader) == (s.id == first)
                })
            })
            .then_some(first)
    }

    fn converged(&self, group: &[u64]) -> Option<u64> {
        let leader = self.agreed_leader(group)?;
        // With every service up, the leader must be healthy too.
        if self.nodes.iter().all(|n| n.service_up) && !self.node(leader).healthy {
            return None;
        }
        self.cloud
            .iter()
            .all(|holder| *holder == Some(leader))
            .then_some(leader)
    }

    fn heal_all(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        self.crash_rate = 0.0;
        self.call_failure_rate = 0.0;
        let now = self.now;
        for id in self.ids() {
            let node = self.node_mut(id);
            node.paused_until = node.paused_until.min(now);
            if node.core.is_none() {
                self.schedule(now + 1, Event::Restart { node: id });
            }
        }
    }

    fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
        self.stats.isolations += 1;
    }

    /// Runs until `group` agrees on a leader and the cloud points at it.
    fn await_convergence(&mut self, group: &[u64], why: &str) -> u64 {
        let start = self.now;
        while self.converged(group).is_none() {
            if self.now - start > LIVENESS_BOUND_MS {
                self.fail(format!(
                    "{why}: nodes {group:?} did not converge on a leader holding every resource within {LIVENESS_BOUND_MS} ms"
                ));
            }
            self.run_for(10);
        }
        let took = self.now - start;
        self.stats.worst_convergence_ms = self.stats.worst_convergence_ms.max(took);
        took
    }

    fn phase_chaos(&mut self) {
        let length = self.rng.gen_range(1_000..15_000);
        self.loss = *[0.0, 0.05, 0.3].choose(&mut self.rng).unwrap();
        self.crash_rate = *[0.0, 0.01, 0.05].choose(&mut self.rng).unwrap();
        self.call_failure_rate = *[0.0, 0.1, 0.5].choose(&mut self.rng).unwrap();
        let end = self.now + length;
        while self.now < end {
            let roll: f64 = self.rng.gen();
            let ids = self.ids();
            let target = *ids.choose(&mut self.rng).unwrap();
            if roll < 0.01 {
                let down_for = self.rng.gen_range(10..6_000);
                self.crash(target, Some(down_for));
            } else if roll < 0.02 {
                let pause = self.rng.gen_range(100..4_000);
                self.node_mut(target).paused_until = self.now + pause;
                self.stats.pauses += 1;
            } else if roll < 0.03 {
                self.isolate(target);
            } else if roll < 0.05 {
                let other = *ids.choose(&mut self.rng).unwrap();
                if other != target {
                    self.cut.insert((target, other));
                }
            } else if roll < 0.06 {
                self.cut.clear();
            }
            self.run_for(100);
        }
    }

    /// Heal, converge, then check that the resources stay put while nothing happens.
    fn phase_heal(&mut self) {
        if self.trace {
            println!("{:>8} ms  heal", self.now);
        }
        self.heal_all();
        for node in &mut self.nodes {
            node.service_up = true;
        }
        // Timers that ran out during the faults may still start an election just after the
        // heal; that is recovery, not flapping. Let them play out, then expect stability.
        self.run_for(2 * ELECTION_TICKS as u64 * TICK_MS + 500);
        let all = self.ids();
        self.await_convergence(&all, "after healing everything");
        let leader = self.agreed_leader(&all).unwrap();
        let term = self.status(leader).unwrap().term;
        for _ in 0..30 {
            self.run_for(100);
            let newest_term = self.leader_of_term.keys().next_back().copied();
            if newest_term != Some(term) || self.cloud.iter().any(|h| *h != Some(leader)) {
                self.fail(format!(
                    "flapping: with nothing failing, leadership (term {term}) or resources moved away from {leader}"
                ));
            }
        }
    }

    fn phase_isolate_leader(&mut self) {
        let Some(old) = self.current_leader() else {
            return;
        };
        self.isolate(old);
        let ticks_at_cut = self.node(old).ticks;
        let rest: Vec<u64> = self.ids().into_iter().filter(|&id| id != old).collect();
        let start = self.now;
        let mut stepped_down = false;
        loop {
            let old_leads = self.status(old).is_some_and(|s| s.role == Role::Leader);
            let ticks = self.node(old).ticks - ticks_at_cut;
            if old_leads && ticks > STEP_DOWN_TICKS {
                self.fail(format!(
                    "isolated leader {old} still leads {ticks} ticks after the cut (bound {STEP_DOWN_TICKS})"
                ));
            }
            if !old_leads && !stepped_down {
                stepped_down = true;
                self.stats.worst_step_down_ticks = self.stats.worst_step_down_ticks.max(ticks);
            }
            if stepped_down && self.converged(&rest).is_some() {
                break;
            }
            if self.now - start > LIVENESS_BOUND_MS {
                self.fail(format!(
                    "after isolating leader {old}, nodes {rest:?} did not converge within {LIVENESS_BOUND_MS} ms"
                ));
            }
            self.run_for(10);
        }
    }

    fn phase_crash_leader(&mut self) {
        let Some(old) = self.current_leader() else {
            return;
        };
        self.crash(old, None);
        let rest: Vec<u64> = self.ids().into_iter().filter(|&id| id != old).collect();
        self.await_convergence(&rest, &format!("after crashing leader {old}"));
    }

    fn phase_pause_leader(&mut self) {
        let Some(old) = self.current_leader() else {
            return;
        };
        let pause = self.rng.gen_range(1_000..5_000);
        self.node_mut(old).paused_until = self.now + pause;
        self.stats.pauses += 1;
        self.run_for(pause + 500);
    }

    /// The leader's service fails: it hands off to a healthy peer within the bound, and the
    /// resources follow.
    fn phase_unhealthy_leader(&mut self) {
        let Some(old) = self.current_leader() else {
            return;
        };
        self.calm = true;
        self.node_mut(old).service_up = false;
        let start = self.now;
        while self.status(old).is_some_and(|s| s.role == Role::Leader) {
            if self.now - start > UNHEALTHY_HAND_OFF_BOUND_MS {
                self.fail(format!(
                    "unhealthy leader {old} still leads {} ms after its service failed (bound {UNHEALTHY_HAND_OFF_BOUND_MS} ms)",
                    self.now - start
                ));
            }
            self.run_for(10);
        }
        let all = self.ids();
        self.await_convergence(&all, &format!("after leader {old}'s service failed"));
        let leader = self.agreed_leader(&all).unwrap();
        if leader == old || !self.node(leader).healthy {
            self.fail(format!(
                "after {old}'s service failed, {leader} leads (healthy: {})",
                self.node(leader).healthy
            ));
        }
        self.calm = false;
    }

    /// Every service fails: nothing moves (the leader keeps the resources, degraded).
    fn phase_everyone_unhealthy(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let cloud = self.cloud.clone();
        let hand_offs = self.hand_offs;
        for node in &mut self.nodes {
            node.service_up = false;
        }
        self.run_for(5_000);
        if self.current_leader() != Some(leader)
            || self.cloud != cloud
            || self.hand_offs != hand_offs
        {
            self.fail(format!(
                "with every node unhealthy something moved: leader {leader} -> {:?}, cloud {cloud:?} -> {:?}",
                self.current_leader(),
                self.cloud
            ));
        }
        if !self.status(leader).is_some_and(|s| s.degraded) {
            self.fail(format!("leader {leader} does not report degraded"));
        }
    }

    /// The leader's service flaps: hysteresis and the minimum interval bound the hand-offs.
    fn phase_flapping(&mut self) {
        if self.current_leader().is_none() {
            return;
        }
        let length = 10_000;
        let hand_offs = self.hand_offs;
        let end = self.now + length;
        while self.now < end {
            if let Some(leader) = self.current_leader() {
                let node = self.node_mut(leader);
                node.service_up = !node.service_up;
            }
            let period = self.rng.gen_range(150..900);
            self.run_for(period);
        }
        // Each node hands off at most once per interval; a hand-off needs FALL failed probes.
        let bound = self.nodes.len() as u64 * (1 + length / MIN_HAND_OFF_MS);
        let made = self.hand_offs - hand_offs;
        if made > bound {
            self.fail(format!(
                "a flapping service caused {made} hand-offs in {length} ms (bound {bound})"
            ));
        }
        self.stats.flap_hand_offs += made;
    }

    /// Maintenance on: the leader's service fails and the leader crashes, yet nothing is
    /// claimed; maintenance off: everything converges again.
    fn phase_maintenance(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let via = *self.ids().choose(&mut self.rng).unwrap();
        self.feed(via, Input::Operator(Command::Maintenance(true)));
        let start = self.now;
        while !self.maintenance_everywhere() {
            if self.now - start > 5_000 {
                self.fail("maintenance on did not reach every node within 5 s".into());
            }
            self.run_for(10);
        }
        let claims = self.maintenance_claims;
        let hand_offs = self.hand_offs;
        self.node_mut(leader).service_up = false;
        self.run_for(2_000);
        if self.hand_offs != hand_offs {
            self.fail("a hand-off happened during maintenance".into());
        }
        self.crash(leader, Some(3_000));
        self.run_for(5_000);
        if self.maintenance_claims != claims {
            self.fail(format!(
                "{} claims during maintenance",
                self.maintenance_claims - claims
            ));
        }
        self.stats.maintenance_phases += 1;
        let Some(now_leader) = self.current_leader() else {
            return;
        };
        self.feed(now_leader, Input::Operator(Command::Maintenance(false)));
    }

    /// A planned hand-off (SIGTERM, switchover): the leader gives up its lease first.
    fn phase_hand_off(&mut self) {
        let Some(old) = self.current_leader() else {
            return;
        };
        let wait = self.rng.gen_range(0..1_000);
        self.run_for(wait);
        if self.status(old).is_some_and(|s| s.role == Role::Leader) {
            self.feed(old, Input::HandOff);
        }
        let rest: Vec<u64> = self.ids();
        self.await_convergence(&rest, &format!("after leader {old} handed off"));
    }

    /// The hole the quiet period closes: the leader is cut off from one follower, which
    /// starts campaigning, while another follower — whose acknowledgements keep the leader's
    /// lease alive — crashes and restarts at once. Without the quiet period the restarted
    /// node votes for the campaigner inside the leader's lease.
    fn phase_restart_during_partial_partition(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let mut others: Vec<u64> = self.ids().into_iter().filter(|&id| id != leader).collect();
        others.shuffle(&mut self.rng);
        let (campaigner, restarter) = (others[0], others[1]);
        self.cut.insert((leader, campaigner));
        self.cut.insert((campaigner, leader));
        let wait = self.rng.gen_range(800..2_500);
        self.run_for(wait);
        let down_for = self.rng.gen_range(1..60);
        self.crash(restarter, Some(down_for));
        self.run_for(3_000);
    }

    fn run(&mut self, phases: usize) {
        self.phase_heal();
        for _ in 0..phases {
            let phase = self.rng.gen_range(0..11);
            if self.trace {
                println!("{:>8} ms  phase {phase}", self.now);
            }
            match phase {
                0 | 1 => self.phase_chaos(),
                2 => self.phase_isolate_leader(),
                3 => self.phase_crash_leader(),
                4 => self.phase_hand_off(),
                5 => self.phase_restart_during_partial_partition(),
                6 => self.phase_unhealthy_leader(),
                7 => self.phase_everyone_unhealthy(),
                8 => self.phase_flapping(),
                9 => self.phase_maintenance(),
                _ => self.phase_pause_leader(),
            }
            self.phase_heal();
        }
    }
}

fn voter(id: u64) -> Member {
    Member {
        id,
        role: MemberRole::Voter,
    }
}

fn schedules() -> u64 {
    std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn seeded_schedules_keep_every_invariant() {
    let count = schedules();
    assert!(count > 0);
    let mut total = Stats::default();
    let mut simulated_ms = 0;
    for seed in 0..count {
        let mut sim = Sim::new(seed);
        sim.run(4);
        simulated_ms += sim.now;
        let s = sim.stats;
        total.events += s.events;
        total.crashes += s.crashes;
        total.crashes_before_persist += s.crashes_before_persist;
        total.pauses += s.pauses;
        total.elections += s.elections;
        total.witness_elections += s.witness_elections;
        total.isolations += s.isolations;
        total.claims += s.claims;
        total.failed_calls += s.failed_calls;
        total.worst_convergence_ms = total.worst_convergence_ms.max(s.worst_convergence_ms);
        total.worst_step_down_ticks = total.worst_step_down_ticks.max(s.worst_step_down_ticks);
        total.flap_hand_offs += s.flap_hand_offs;
        total.maintenance_phases += s.maintenance_phases;
    }
    println!(
        "{count} schedules, {} simulated hours: {} events, {} elections ({} won by a witness and handed on), \
         {} claims, {} failed calls, {} crashes ({} between send and persist), {} pauses, {} isolations; \
         worst convergence {} ms, worst step-down of an isolated leader {} ticks; \
         {} hand-offs under flapping, {} maintenance phases without a claim",
        simulated_ms / 3_600_000,
        total.events,
        total.elections,
        total.witness_elections,
        total.claims,
        total.failed_calls,
        total.crashes,
        total.crashes_before_persist,
        total.pauses,
        total.isolations,
        total.worst_convergence_ms,
        total.worst_step_down_ticks,
        total.flap_hand_offs,
        total.maintenance_phases
    );
    // The schedules must exercise the faults they claim to.
    assert!(
        total.elections > count,
        "too few elections: {}",
        total.elections
    );
    assert!(
        total.crashes_before_persist > 0,
        "no crash fell between send and persist"
    );
    assert!(
        total.isolations > 0 && total.pauses > 0,
        "no isolation or pause"
    );
    assert!(total.claims > count, "too few claims: {}", total.claims);
    assert!(total.failed_calls > 0, "no cloud call ever failed");
    assert!(
        total.witness_elections > 0,
        "no witness ever won, so its hand-off went untested"
    );
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let mut sim = Sim::new(seed);
    sim.run(4);
    println!(
        "seed {seed} passed: {} elections, {} claims",
        sim.stats.elections, sim.stats.claims
    );
}

/// The quiet period: a node that just restarted must not grant a vote, however the request
/// looks, until an election timeout has passed.
#[test]
fn restarted_node_grants_no_vote_during_its_quiet_period() {
    let mut sim = Sim::new(7);
    sim.phase_heal();
    let leader = sim.current_leader().expect("a leader after healing");
    let follower = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.crash(follower, None);
    sim.start(follower);
    let st = sim.status(follower).unwrap();
    assert!(st.quiet, "a restarted node starts quiet");
    let mut request = Message::default();
    request.set_msg_type(MessageType::MsgRequestVote);
    request.set_from(leader);
    request.set_to(follower);
    request.set_term(st.term + 5);
    request.set_index(1_000);
    request.set_log_term(st.term + 5);
    let core = sim.node_mut(follower).core.as_mut().unwrap();
    let out = core.handle(0, Input::Peer(request.clone()));
    assert!(
        out.all_messages()
            .all(|m| m.get_msg_type() != MessageType::MsgRequestVoteResponse),
        "no vote response while quiet"
    );
    assert!(out
        .notices
        .iter()
        .any(|n| matches!(n, Notice::VoteIgnoredWhileQuiet { .. })));
    for tick in 1..=ELECTION_TICKS as u64 {
        core.handle(tick * TICK_MS, Input::Tick);
    }
    assert!(
        !core.status().quiet,
        "the quiet period ends after one election timeout"
    );
    let out = core.handle(ELECTION_TICKS as u64 * TICK_MS, Input::Peer(request));
    assert!(
        out.all_messages()
            .any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse),
        "after the quiet period the request is answered"
    );
}

/// A leader gives its lease up before it hands leadership away, and issues no call after.
#[test]
fn hand_off_surrenders_the_lease_first() {
    let mut sim = Sim::new(11);
    sim.phase_heal();
    let leader = sim.current_leader().unwrap();
    sim.run_for(500);
    assert!(sim
        .node(leader)
        .core
        .as_ref()
        .unwrap()
        .lease_until()
        .is_some());
    let local = sim.node(leader).local(sim.now);
    let out = sim
        .node_mut(leader)
        .core
        .as_mut()
        .unwrap()
        .handle(local, Input::HandOff);
    assert!(out
        .notices
        .iter()
        .any(|n| matches!(n, Notice::HandingOff { .. })));
    assert!(out.calls.is_empty());
    let core = sim.node(leader).core.as_ref().unwrap();
    assert_eq!(core.lease_until(), None, "no lease once a transfer started");
}

/// Peers cannot make a leader transfer leadership (that would bypass the lease).
#[test]
fn transfer_requests_from_peers_are_refused() {
    let mut sim = Sim::new(3);
    sim.phase_heal();
    let leader = sim.current_leader().unwrap();
    let other = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgTransferLeader);
    m.set_from(other);
    m.set_to(leader);
    m.set_term(sim.status(leader).unwrap().term);
    let local = sim.node(leader).local(sim.now);
    let core = sim.node_mut(leader).core.as_mut().unwrap();
    let out = core.handle(local, Input::Peer(m));
    assert!(out
        .notices
        .iter()
        .any(|n| matches!(n, Notice::MessageRefused { .. })));
    assert_eq!(core.status().transferring_to, None);
}

/// Runs a three-voter group where node 1 has the highest priority but starts with its service
/// down, until another node leads with every resource; returns that leader.
fn group_led_by_a_lower_priority_node(preempt: bool) -> (Sim, u64) {
    let seed = (0..200)
        .find(|&seed| Sim::new(seed).nodes.len() == 3 && !Sim::new(seed).nodes[2].is_witness())
        .expect("a three-voter layout among the first seeds");
    let mut sim = Sim::new(seed);
    for node in &mut sim.nodes {
        node.config.priority = if node.id == 1 { 150 } else { 100 };
        node.config.health.preempt = preempt;
        node.config.health.preempt_delay_ms = 3_000;
        node.service_up = node.id != 1;
    }
    let deadline = sim.now + LIVENESS_BOUND_MS;
    loop {
        let all = sim.ids();
        if let Some(leader) = sim.agreed_leader(&all) {
            if leader != 1 && sim.cloud.iter().all(|h| *h == Some(leader)) {
                return (sim, leader);
            }
        }
        assert!(sim.now < deadline, "no healthy leader other than node 1");
        sim.run_for(10);
    }
}

/// With `preempt`, a recovered node of higher priority takes leadership back once it has been
/// healthy for `preempt-delay`, not before; the resources follow.
#[test]
fn preemption_waits_for_the_delay_then_takes_leadership_back() {
    let (mut sim, first) = group_led_by_a_lower_priority_node(true);
    sim.node_mut(1).service_up = true;
    let recovered = sim.now;
    let deadline = recovered + 3_000 + LIVENESS_BOUND_MS;
    loop {
        let leader = sim.current_leader();
        if leader == Some(1) {
            let healthy_for = sim.now - sim.node(1).health_since;
            assert!(
                healthy_for >= 3_000,
                "node 1 took leadership back after being healthy for only {healthy_for} ms"
            );
            break;
        }
        assert!(
            sim.now < deadline,
            "node 1 never took leadership back from {first}"
        );
        sim.run_for(10);
    }
    let all = sim.ids();
    sim.await_convergence(&all, "after preemption");
    assert_eq!(sim.agreed_leader(&all), Some(1));
}

/// Without `preempt` (the default), a recovered node of higher priority does not take
/// leadership back.
#[test]
fn without_preemption_a_recovered_node_does_not_take_leadership_back() {
    let (mut sim, first) = group_led_by_a_lower_priority_node(false);
    sim.node_mut(1).service_up = true;
    sim.run_for(10_000);
    let all = sim.ids();
    assert_eq!(
        sim.agreed_leader(&all),
        Some(first),
        "leadership moved without preempt"
    );
    assert!(sim.cloud.iter().all(|h| *h == Some(first)));
}

/// Maintenance is in the Raft log: a group that restarts entirely still has it on.
#[test]
fn maintenance_survives_a_restart_of_every_node() {
    let mut sim = Sim::new(5);
    sim.phase_heal();
    let leader = sim.current_leader().unwrap();
    sim.feed(leader, Input::Operator(Command::Maintenance(true)));
    let deadline = sim.now + 5_000;
    while !sim.maintenance_everywhere() {
        assert!(sim.now < deadline, "maintenance did not reach every node");
        sim.run_for(10);
    }
    for id in sim.ids() {
        sim.crash(id, Some(100));
    }
    sim.run_for(5_000);
    for id in sim.ids() {
        let status = sim.status(id).expect("restarted");
        assert!(
            status.maintenance,
            "node {id} forgot maintenance after a restart"
        );
    }
}
