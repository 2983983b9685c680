//! The leader's quorum lease: the window in which it may act on the cloud.
//!
//! See the crate documentation (rule 4) for the argument. Mechanically: on every tick the leader
//! starts a heartbeat round that carries a context (raft-rs `read_index` with
//! `ReadOnlyOption::Safe`: the heartbeats go out with the context and raft reports a
//! `ReadState` once a majority has acknowledged that very round). The lease then runs until
//! the round's *send* time plus [`lease_duration_ms`]. Rounds sent before the leader last gave
//! its lease up (before a transfer) are never credited.

use std::collections::BTreeMap;

/// Bound on the rate difference between two nodes' monotonic clocks (5 %, far above what
/// crystal oscillators and NTP-disciplined clocks drift, to cover virtualised timekeeping).
pub const CLOCK_RATE_BOUND: f64 = 0.05;
/// Scheduling margin subtracted from every lease, in milliseconds.
pub const SCHEDULING_MARGIN_MS: u64 = 50;

/// Length of a lease, measured from the send time of the acknowledged round:
/// `(election timeout - one tick) * (1 - ρ) - δ`.
///
/// A follower resets its election timer when a heartbeat arrives, and its check-quorum refuses
/// votes until `election_ticks` ticks have passed. Its first tick may come at once after the
/// heartbeat, so in real time it refuses votes for at least `(election_ticks - 1)` tick
/// lengths of its own clock; ticks that come late (a busy or paused process) only lengthen
/// that. Scaling by `1 - ρ` converts that span from the follower's clock to the leader's, and
/// `δ` covers the time between reading the clock and the heartbeat leaving.
pub fn lease_duration_ms(tick_ms: u64, election_ticks: u64) -> u64 {
    let follower_guard = election_ticks.saturating_sub(1) * tick_ms;
    let scaled = (follower_guard as f64 * (1.0 - CLOCK_RATE_BOUND)) as u64;
    scaled.saturating_sub(SCHEDULING_MARGIN_MS)
}

/// Lease bookkeeping of one node.
#[derive(Debug)]
pub(crate) struct Lease {
    duration_ms: u64,
    next_round: u64,
    /// Rounds in flight: context → send time.
    rounds: BTreeMap<u64, u64>,
    /// Rounds numbered below this are never credited (they were sent before a surrender).
    floor_round: u64,
    /// The lease ends here (exclusive); `None` when there is no lease.
    end_ms: Option<u64>,
}

impl Lease {
    pub(crate) fn new(duration_ms: u64) -> Lease {
        Lease {
            duration_ms,
            next_round: 1,
            rounds: BTreeMap::new(),
            floor_round: 0,
            end_ms: None,
        }
    }

    /// Registers a round sent at `now_ms`; returns the context to attach to it.
    pub(crate) fn start_round(&mut self, now_ms: u64) -> Vec<u8> {
        let id = self.next_round;
        self.next_round += 1;
        self.rounds.insert(id, now_ms);
        // Rounds that never complete (lost heartbeats) are forgotten after a while.
        let stale_before = now_ms.saturating_sub(self.duration_ms * 4);
        self.rounds.retain(|_, sent| *sent >= stale_before);
        id.to_be_bytes().to_vec()
    }

    /// A majority acknowledged the round with this context.
    pub(crate) fn acknowledged(&mut self, context: &[u8]) {
        let Ok(bytes) = <[u8; 8]>::try_from(context) else {
            return;
        };
        let id = u64::from_be_bytes(bytes);
        let Some(sent) = self.rounds.remove(&id) else {
            return;
        };
        self.rounds.retain(|&other, _| other > id);
        if id < self.floor_round {
            return;
        }
        let end = sent + self.duration_ms;
        self.end_ms = Some(self.end_ms.map_or(end, |e| e.max(end)));
    }

    /// Gives the lease up at once, and refuses credit for every round sent so far.
    pub(crate) fn surrender(&mut self) {
        self.end_ms = None;
        self.rounds.clear();
        self.floor_round = self.next_round;
    }

    /// The end of the lease if it is still valid at `now_ms`.
    pub(crate) fn valid_until(&self, now_ms: u64) -> Option<u64> {
        self.end_ms.filter(|&end| now_ms < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lease_is_about_eight_tenths_of_a_second() {
        assert_eq!(lease_duration_ms(100, 10), 805);
    }

    #[test]
    fn credit_goes_to_the_send_time_of_the_acknowledged_round() {
        let mut lease = Lease::new(800);
        let first = lease.start_round(1_000);
        let second = lease.start_round(1_100);
        assert_eq!(lease.valid_until(1_150), None);
        lease.acknowledged(&second);
        assert_eq!(lease.valid_until(1_150), Some(1_900));
        // An older round acknowledged later does not shorten or extend it.
        lease.acknowledged(&first);
        assert_eq!(lease.valid_until(1_150), Some(1_900));
        assert_eq!(lease.valid_until(1_900), None);
    }

    #[test]
    fn surrender_ends_the_lease_and_voids_rounds_in_flight() {
        let mut lease = Lease::new(800);
        let before = lease.start_round(1_000);
        lease.surrender();
        lease.acknowledged(&before);
        assert_eq!(lease.valid_until(1_020), None);
        // A round started at the same instant as the surrender, but after it, counts.
        let after = lease.start_round(1_020);
        lease.acknowledged(&after);
        assert_eq!(lease.valid_until(1_030), Some(1_820));
        lease.surrender();
        assert_eq!(lease.valid_until(1_030), None);
    }
}
