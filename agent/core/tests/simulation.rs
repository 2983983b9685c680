//! The simulation harness: many cores on an in-memory network, driven by one seeded RNG.
//!
//! Each schedule builds a group (three voters, two voters and a witness, or five voters, with
//! random priorities) and runs a sequence of phases:
//!
//! - **chaos**: random message loss and delay, link cuts, node isolation, crashes at any point
//!   of an output (even between sending and persisting) and restarts from what was made durable;
//! - **heal**: every link restored, every node restarted; a single leader that every node
//!   follows must exist within [`LIVENESS_BOUND`] election timeouts;
//! - **isolate leader**: the leader is cut off both ways; it must step down within the bound the
//!   safety argument promises (two election timeouts), and the rest must elect a new leader;
//! - **crash leader**: the leader crashes; the rest must elect a new leader.
//!
//! After every delivery and every tick the harness checks: at most one leader per term; no node
//! grants its vote to two candidates in one term (across restarts); every node agrees with
//! every other on the terms of committed entries; every leader holds every committed entry.
//!
//! A failure panics with the seed. Replay one seed with
//! `SIM_SEED=1234 cargo test -p ha-agent-core --test simulation -- replay --nocapture`;
//! run more with `SIM_SCHEDULES=20000`.

use std::collections::{BTreeMap, BTreeSet};

use ha_agent_core::{
    Core, CoreConfig, DurableState, Input, Member, MemberRole, Message, Output, Role,
};
use raft::prelude::MessageType;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Election timeout in ticks, as at the default settings (1 s / 100 ms).
const ELECTION_TICKS: usize = 10;
/// A connected majority must agree on a leader within this many election timeouts.
const LIVENESS_BOUND: u64 = 12;
/// An isolated leader must step down within this many ticks: check-quorum examines its
/// followers every election timeout, and the first examination that covers only time after
/// the cut finds no majority (crate docs, rule 3). One tick of slack for where the cut falls
/// inside a tick.
const STEP_DOWN_BOUND: u64 = 2 * ELECTION_TICKS as u64 + 1;
/// Bound on delivery rounds within one tick; more means a message storm.
const MAX_ROUNDS_PER_TICK: usize = 200;

struct SimNode {
    id: u64,
    config: CoreConfig,
    core: Option<Core>,
    /// What the node made durable: all it keeps across a crash.
    disk: Option<DurableState>,
    restart_at: Option<u64>,
    restarts: u64,
}

#[derive(Default)]
struct Stats {
    ticks: u64,
    crashes: u64,
    crashes_before_persist: u64,
    elections: u64,
    witness_elections: u64,
    isolations: u64,
    messages: u64,
    worst_liveness_ticks: u64,
    worst_step_down_ticks: u64,
}

struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    logger: slog::Logger,
    nodes: Vec<SimNode>,
    now: u64,
    /// Messages in flight, with the tick at which they arrive.
    in_flight: Vec<(u64, Message)>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    loss: f64,
    crash_rate: f64,
    leader_of_term: BTreeMap<u64, u64>,
    vote_of: BTreeMap<(u64, u64), u64>,
    committed_term: BTreeMap<u64, u64>,
    stats: Stats,
}

impl SimNode {
    fn is_witness(&self) -> bool {
        self.config
            .members
            .iter()
            .any(|m| m.id == self.id && m.role == MemberRole::Witness)
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layout = rng.gen_range(0..3);
        let members: Vec<Member> = match layout {
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
        let nodes = members
            .iter()
            .map(|m| {
                let priority = match m.role {
                    MemberRole::Witness => 0,
                    MemberRole::Voter => *[100, 100, 50, 150].choose(&mut rng).unwrap(),
                };
                let config = CoreConfig {
                    id: m.id,
                    members: members.clone(),
                    priority,
                    election_ticks: ELECTION_TICKS,
                    heartbeat_ticks: 1,
                };
                SimNode {
                    id: m.id,
                    config,
                    core: None,
                    disk: None,
                    restart_at: Some(0),
                    restarts: 0,
                }
            })
            .collect();
        Sim {
            seed,
            rng,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            nodes,
            now: 0,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            loss: 0.0,
            crash_rate: 0.0,
            leader_of_term: BTreeMap::new(),
            vote_of: BTreeMap::new(),
            committed_term: BTreeMap::new(),
            stats: Stats::default(),
        }
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
            "simulation seed {} failed at tick {}: {what}\nnodes:\n  {}\nreplay: SIM_SEED={} cargo test -p ha-agent-core --test simulation -- replay --nocapture",
            self.seed,
            self.now,
            states.join("\n  "),
            self.seed
        );
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&mut self, id: u64) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn is_up(&self, id: u64) -> bool {
        self.nodes[(id - 1) as usize].core.is_some()
    }

    fn status(&self, id: u64) -> Option<ha_agent_core::CoreStatus> {
        self.nodes[(id - 1) as usize]
            .core
            .as_ref()
            .map(|c| c.status())
    }

    fn start(&mut self, id: u64) {
        let seed = self.rng.gen();
        let node = self.node(id);
        let config = node.config.clone();
        let disk = node.disk.clone();
        let logger = self.logger.clone();
        match Core::new(config, disk, seed, &logger) {
            Ok(core) => {
                let node = self.node(id);
                node.core = Some(core);
                node.restart_at = None;
                node.restarts += 1;
            }
            Err(e) => self.fail(format!(
                "node {id} cannot restart from its durable state: {e}"
            )),
        }
    }

    fn crash(&mut self, id: u64, down_for: u64) {
        let at = self.now + down_for;
        let node = self.node(id);
        node.core = None;
        node.restart_at = Some(at);
        self.stats.crashes += 1;
    }

    /// Feeds an input to a node and carries out its output the way the daemon does, with a
    /// chance of crashing between sending and persisting.
    fn feed(&mut self, id: u64, input: Input) {
        let Some(core) = self.node(id).core.as_mut() else {
            return;
        };
        let out = core.handle(input);
        self.execute(id, out);
    }

    fn execute(&mut self, id: u64, out: Output) {
        for m in &out.send {
            self.record_sent(id, m);
        }
        let early: Vec<Message> = out.send;
        self.enqueue(early);
        if out.persist.is_some() && self.rng.gen_bool(self.crash_rate) {
            self.stats.crashes_before_persist += 1;
            let down_for = self.rng.gen_range(1..30);
            self.crash(id, down_for);
            return;
        }
        if let Some(state) = out.persist {
            self.node(id).disk = Some(state);
        }
        for m in &out.send_after_persist {
            self.record_sent(id, m);
        }
        self.enqueue(out.send_after_persist);
    }

    fn enqueue(&mut self, messages: Vec<Message>) {
        for m in messages {
            self.stats.messages += 1;
            let delay = if self.rng.gen_bool(0.1) {
                self.rng.gen_range(1..3)
            } else {
                0
            };
            self.in_flight.push((self.now + delay, m));
        }
    }

    /// Votes are checked as they leave a node: granting two candidates in one term is the
    /// fault the durable-vote rule prevents.
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

    fn deliver_due(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_TICK {
            let now = self.now;
            let (mut due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(at, _)| *at <= now);
            self.in_flight = later;
            if due.is_empty() {
                return;
            }
            due.shuffle(&mut self.rng);
            for (_, m) in due {
                let (from, to) = (m.get_from(), m.get_to());
                if self.cut.contains(&(from, to)) || !self.is_up(to) {
                    continue;
                }
                if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                    continue;
                }
                self.feed(to, Input::Peer(m));
                self.check();
            }
        }
        self.fail("message storm: deliveries did not settle within one tick".into());
    }

    fn tick(&mut self) {
        self.now += 1;
        self.stats.ticks += 1;
        let due: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.core.is_none() && n.restart_at.is_some_and(|at| at <= self.now))
            .map(|n| n.id)
            .collect();
        for id in due {
            self.start(id);
        }
        let mut order = self.ids();
        order.shuffle(&mut self.rng);
        for id in order {
            self.feed(id, Input::Tick);
        }
        self.check();
        self.deliver_due();
    }

    /// The safety invariants, checked after every step.
    fn check(&mut self) {
        let mut newest_leaders = Vec::new();
        for node in &self.nodes {
            let Some(core) = &node.core else { continue };
            let st = core.status();
            if st.role == Role::Leader {
                newest_leaders.push((st.term, node.id));
            }
        }
        for (term, id) in newest_leaders {
            match self.leader_of_term.get(&term) {
                Some(&other) if other != id => {
                    self.fail(format!("two leaders in term {term}: {other} and {id}"))
                }
                Some(_) => {}
                None => {
                    self.leader_of_term.insert(term, id);
                    self.stats.elections += 1;
                    if self.nodes[(id - 1) as usize].is_witness() {
                        self.stats.witness_elections += 1;
                    }
                    self.check_leader_completeness(id);
                }
            }
        }
        // Committed entries: every node agrees on their terms, and none is ever lost.
        let ids = self.ids();
        for id in ids {
            let Some(st) = self.status(id) else { continue };
            let core = self.nodes[(id - 1) as usize].core.as_ref().unwrap();
            let known = self.committed_term.keys().next_back().copied().unwrap_or(0);
            for index in 1..=st.commit {
                let Some(term) = core.log_term(index) else {
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

    fn check_leader_completeness(&self, id: u64) {
        let core = self.nodes[(id - 1) as usize].core.as_ref().unwrap();
        for (&index, &term) in &self.committed_term {
            if core.log_term(index) != Some(term) {
                self.fail(format!(
                    "new leader {id} lacks committed entry {index} (term {term}); has {:?}",
                    core.log_term(index)
                ));
            }
        }
    }

    fn current_leader(&self) -> Option<(u64, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| (s.id, s.term))
    }

    /// The nodes in `group` agree on one leader among them.
    fn agreed_leader(&self, group: &[u64]) -> Option<u64> {
        let statuses: Vec<_> = group.iter().map(|&id| self.status(id)).collect();
        let first = statuses.first()?.as_ref()?.leader_id?;
        // A witness never counts as a settled leader: it must hand leadership to a voter.
        if !group.contains(&first) || self.nodes[(first - 1) as usize].is_witness() {
            return None;
        }
        let all_agree = statuses.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                s.leader_id == Some(first) && (s.role == Role::Leader) == (s.id == first)
            })
        });
        all_agree.then_some(first)
    }

    fn heal_all(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        self.crash_rate = 0.0;
        let now = self.now;
        for node in &mut self.nodes {
            if node.core.is_none() {
                node.restart_at = Some(now + 1);
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

    /// Runs until `group` agrees on a leader; returns the ticks it took.
    fn await_leader(&mut self, group: &[u64], why: &str) -> u64 {
        let start = self.now;
        let bound = LIVENESS_BOUND * ELECTION_TICKS as u64;
        while self.agreed_leader(group).is_none() {
            if self.now - start > bound {
                self.fail(format!(
                    "{why}: nodes {group:?} agreed on no leader within {bound} ticks"
                ));
            }
            self.tick();
        }
        let took = self.now - start;
        self.stats.worst_liveness_ticks = self.stats.worst_liveness_ticks.max(took);
        took
    }

    fn phase_chaos(&mut self) {
        let length = self.rng.gen_range(20..200);
        self.loss = *[0.0, 0.05, 0.3].choose(&mut self.rng).unwrap();
        self.crash_rate = *[0.0, 0.01, 0.05].choose(&mut self.rng).unwrap();
        for _ in 0..length {
            let roll: f64 = self.rng.gen();
            let ids = self.ids();
            let target = *ids.choose(&mut self.rng).unwrap();
            if roll < 0.01 && self.is_up(target) {
                let down_for = self.rng.gen_range(1..60);
                self.crash(target, down_for);
            } else if roll < 0.02 {
                self.isolate(target);
            } else if roll < 0.04 {
                let other = *ids.choose(&mut self.rng).unwrap();
                if other != target {
                    self.cut.insert((target, other));
                }
            } else if roll < 0.05 {
                self.cut.clear();
            }
            self.tick();
        }
    }

    fn phase_heal(&mut self) {
        self.heal_all();
        let all = self.ids();
        self.await_leader(&all, "after healing everything");
    }

    fn phase_isolate_leader(&mut self) {
        let Some((old, _)) = self.current_leader() else {
            return;
        };
        self.isolate(old);
        let cut_at = self.now;
        let rest: Vec<u64> = self.ids().into_iter().filter(|&id| id != old).collect();
        let bound = LIVENESS_BOUND * ELECTION_TICKS as u64;
        let mut stepped_down = false;
        loop {
            let old_leads = self.status(old).is_some_and(|s| s.role == Role::Leader);
            if old_leads && self.now - cut_at > STEP_DOWN_BOUND {
                self.fail(format!(
                    "isolated leader {old} still leads {} ticks after the cut (bound {STEP_DOWN_BOUND})",
                    self.now - cut_at
                ));
            }
            if !old_leads && !stepped_down {
                stepped_down = true;
                let took = self.now - cut_at;
                self.stats.worst_step_down_ticks = self.stats.worst_step_down_ticks.max(took);
            }
            if stepped_down && self.agreed_leader(&rest).is_some() {
                break;
            }
            if self.now - cut_at > bound {
                self.fail(format!(
                    "after isolating leader {old}, nodes {rest:?} agreed on no leader within {bound} ticks"
                ));
            }
            self.tick();
        }
    }

    fn phase_crash_leader(&mut self) {
        let Some((old, _)) = self.current_leader() else {
            return;
        };
        self.crash(old, 10_000);
        let rest: Vec<u64> = self.ids().into_iter().filter(|&id| id != old).collect();
        self.await_leader(&rest, &format!("after crashing leader {old}"));
    }

    fn run(&mut self, phases: usize) {
        self.tick();
        self.phase_heal();
        for _ in 0..phases {
            match self.rng.gen_range(0..4) {
                0 | 1 => self.phase_chaos(),
                2 => self.phase_isolate_leader(),
                _ => self.phase_crash_leader(),
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
    for seed in 0..count {
        let mut sim = Sim::new(seed);
        sim.run(6);
        let s = &sim.stats;
        total.ticks += s.ticks;
        total.crashes += s.crashes;
        total.crashes_before_persist += s.crashes_before_persist;
        total.elections += s.elections;
        total.isolations += s.isolations;
        total.messages += s.messages;
        total.worst_liveness_ticks = total.worst_liveness_ticks.max(s.worst_liveness_ticks);
        total.worst_step_down_ticks = total.worst_step_down_ticks.max(s.worst_step_down_ticks);
        assert!(
            sim.nodes.iter().all(|n| n.restarts >= 1),
            "seed {seed}: every node must have started"
        );
    }
    println!(
        "{count} schedules: {} ticks, {} messages, {} elections, {} crashes ({} between send and persist), {} isolations; \
         worst time to a leader {} ticks, worst step-down of an isolated leader {} ticks",
        total.ticks,
        total.messages,
        total.elections,
        total.crashes,
        total.crashes_before_persist,
        total.isolations,
        total.worst_liveness_ticks,
        total.worst_step_down_ticks
    );
    // The schedules must actually exercise the faults they claim to.
    assert!(
        total.elections > count,
        "too few elections: {}",
        total.elections
    );
    assert!(
        total.crashes_before_persist > 0,
        "no crash ever fell between send and persist"
    );
    assert!(total.isolations > 0, "no leader was ever isolated");
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let mut sim = Sim::new(seed);
    sim.run(6);
    println!("seed {seed} passed: {} elections", sim.stats.elections);
}

/// The quiet period: a node that just restarted must not grant a vote, however the request
/// looks, until an election timeout has passed.
#[test]
fn restarted_node_grants_no_vote_during_its_quiet_period() {
    let mut sim = Sim::new(7);
    sim.tick();
    sim.phase_heal();
    let (leader, _) = sim.current_leader().expect("a leader after healing");
    let follower = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.crash(follower, 0);
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
    let core = sim.node(follower).core.as_mut().unwrap();
    let out = core.handle(Input::Peer(request.clone()));
    assert!(
        out.all_messages()
            .all(|m| m.get_msg_type() != MessageType::MsgRequestVoteResponse),
        "no vote response while quiet"
    );
    assert!(out
        .notices
        .iter()
        .any(|n| matches!(n, ha_agent_core::Notice::VoteIgnoredWhileQuiet { .. })));
    for _ in 0..ELECTION_TICKS {
        core.handle(Input::Tick);
    }
    assert!(
        !core.status().quiet,
        "the quiet period ends after one election timeout"
    );
    let out = core.handle(Input::Peer(request));
    assert!(
        out.all_messages()
            .any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse),
        "after the quiet period the request is answered"
    );
}

/// A witness that wins an election hands leadership to a voter: the heal phases accept only a
/// voter as the settled leader, so these schedules pass only if every witness win was handed on.
#[test]
fn witness_wins_are_handed_to_a_voter() {
    let mut witness_elections = 0;
    let mut layouts = 0;
    for seed in 0..400 {
        let mut sim = Sim::new(seed);
        if !sim.nodes.iter().any(SimNode::is_witness) {
            continue;
        }
        layouts += 1;
        sim.run(6);
        witness_elections += sim.stats.witness_elections;
    }
    assert!(layouts > 50, "too few witness layouts: {layouts}");
    assert!(
        witness_elections > 0,
        "no schedule ever elected the witness, so the hand-off went untested"
    );
    println!("{layouts} witness layouts, the witness won {witness_elections} elections and handed each on");
}
