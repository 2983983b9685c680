//! Reconciliation of the floating resources: level-triggered, one call at a time per resource.
//!
//! While this node leads and holds its lease, each resource cycles through: observe who holds
//! it; if not this node, claim it; observe again to confirm; then re-observe every
//! `interval_ms`. Every error re-observes after a jittered, growing backoff. No call starts
//! unless it can finish (its deadline) before the lease ends. Results of calls started in an
//! earlier term or before a reset are recognised by their call id and ignored.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Timing of reconciliation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Deadline of one cloud call (observe or claim), retries inside the SDK included.
    pub call_timeout_ms: u64,
    /// Time between observations of a resource that is in place.
    pub interval_ms: u64,
    /// First retry delay after an error; doubles up to `retry_max_ms`, with jitter.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// A leader that has failed to put some resource in place for this long hands leadership
    /// to a peer (its cloud access may be what is broken).
    pub hand_off_after_ms: u64,
}

/// What a cloud call reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Observation: does the resource point at this node? `holder` describes where it points.
    Observed { points_here: bool, holder: String },
    /// A claim was accepted by the cloud.
    Claimed,
    /// The call failed or timed out.
    Failed { error: String },
}

/// A cloud call the daemon must make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Observe,
    Claim,
}

/// A cloud call to make, identified so that its result can be matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub id: u64,
    pub resource: usize,
    pub kind: CallKind,
    /// The call must be abandoned at this instant (same clock as the core's `now`).
    pub deadline_ms: u64,
    pub term: u64,
}

/// What the core knows of one resource, for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceView {
    /// Where it pointed when last observed, and when.
    pub holder: Option<String>,
    pub points_here: Option<bool>,
    pub observed_at_ms: Option<u64>,
    /// The last claim: when it started and how it ended.
    pub last_claim_at_ms: Option<u64>,
    pub last_claim_took_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Since when it has not been in place (cleared when confirmed in place).
    pub out_of_place_since_ms: Option<u64>,
}

#[derive(Debug)]
struct Resource {
    in_flight: Option<Call>,
    started_ms: u64,
    next_at_ms: u64,
    /// Claim next rather than observe (the last observation said it is elsewhere).
    claim_next: bool,
    view: ResourceView,
}

#[derive(Debug)]
pub(crate) struct Reconciler {
    config: ReconcileConfig,
    resources: Vec<Resource>,
    next_call: u64,
}

/// What the reconciler wants the core to report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Confirmed {
        resource: usize,
        claimed: bool,
    },
    Failed {
        resource: usize,
        kind: CallKind,
        error: String,
    },
    ClaimSucceeded {
        resource: usize,
        took_ms: u64,
    },
}

impl Reconciler {
    pub(crate) fn new(config: ReconcileConfig, count: usize) -> Reconciler {
        Reconciler {
            config,
            resources: (0..count)
                .map(|_| Resource {
                    in_flight: None,
                    started_ms: 0,
                    next_at_ms: 0,
                    claim_next: false,
                    view: ResourceView::default(),
                })
                .collect(),
            next_call: 1,
        }
    }

    pub(crate) fn views(&self) -> Vec<ResourceView> {
        self.resources.iter().map(|r| r.view.clone()).collect()
    }

    /// Forgets calls in flight and schedules an immediate observation of everything: called
    /// when this node becomes leader or stops being one.
    pub(crate) fn reset(&mut self) {
        for r in &mut self.resources {
            r.in_flight = None;
            r.next_at_ms = 0;
            r.claim_next = false;
            r.view.points_here = None;
            r.view.consecutive_failures = 0;
            r.view.out_of_place_since_ms = None;
        }
    }

    /// The latest deadline of a claim still in flight: until then a claim of this node may
    /// still land in the cloud.
    pub(crate) fn claims_in_flight_until(&self) -> Option<u64> {
        self.resources
            .iter()
            .filter_map(|r| r.in_flight)
            .filter(|c| c.kind == CallKind::Claim)
            .map(|c| c.deadline_ms)
            .max()
    }

    /// True when every resource was last observed in place.
    pub(crate) fn all_in_place(&self) -> bool {
        self.resources
            .iter()
            .all(|r| r.view.points_here == Some(true))
    }

    /// Calls to start now, given that the lease (if any) lasts until `lease_end_ms`. With
    /// `claims_allowed` false (maintenance), resources are observed but never claimed.
    pub(crate) fn due_calls(
        &mut self,
        now_ms: u64,
        lease_end_ms: Option<u64>,
        term: u64,
        claims_allowed: bool,
    ) -> Vec<Call> {
        let Some(lease_end) = lease_end_ms else {
            return Vec::new();
        };
        let deadline = now_ms + self.config.call_timeout_ms;
        if deadline > lease_end {
            return Vec::new();
        }
        let mut calls = Vec::new();
        for (index, r) in self.resources.iter_mut().enumerate() {
            if r.in_flight.is_some() || now_ms < r.next_at_ms {
                continue;
            }
            if r.claim_next && !claims_allowed {
                // Observe again later instead: it may have come back, or maintenance may end.
                r.claim_next = false;
                r.next_at_ms = now_ms + self.config.interval_ms.min(1_000);
                continue;
            }
            let call = Call {
                id: self.next_call,
                resource: index,
                kind: if r.claim_next {
                    CallKind::Claim
                } else {
                    CallKind::Observe
                },
                deadline_ms: deadline,
                term,
            };
            self.next_call += 1;
            r.in_flight = Some(call);
            r.started_ms = now_ms;
            if call.kind == CallKind::Claim {
                r.view.last_claim_at_ms = Some(now_ms);
            }
            calls.push(call);
        }
        calls
    }

    /// Records a result. Returns what to report, if anything.
    pub(crate) fn result(
        &mut self,
        now_ms: u64,
        call_id: u64,
        result: CallResult,
        rng: &mut ChaCha8Rng,
    ) -> Option<Event> {
        let config = self.config;
        let (index, r) = self
            .resources
            .iter_mut()
            .enumerate()
            .find(|(_, r)| r.in_flight.is_some_and(|c| c.id == call_id))?;
        let call = r.in_flight.take().expect("matched above");
        match result {
            CallResult::Observed {
                points_here,
                holder,
            } => {
                r.view.holder = Some(holder);
                r.view.points_here = Some(points_here);
                r.view.observed_at_ms = Some(now_ms);
                if points_here {
                    let claimed = r.view.out_of_place_since_ms.is_some();
                    r.claim_next = false;
                    r.next_at_ms = now_ms + config.interval_ms;
                    r.view.consecutive_failures = 0;
                    r.view.out_of_place_since_ms = None;
                    Some(Event::Confirmed {
                        resource: index,
                        claimed,
                    })
                } else {
                    r.claim_next = true;
                    r.next_at_ms = now_ms;
                    r.view.out_of_place_since_ms.get_or_insert(now_ms);
                    None
                }
            }
            CallResult::Claimed => {
                let took = now_ms.saturating_sub(r.started_ms);
                r.view.last_claim_took_ms = Some(took);
                r.view.last_error = None;
                // Confirm by observing again.
                r.next_at_ms = now_ms;
                r.claim_next = false;
                r.view.out_of_place_since_ms.get_or_insert(now_ms);
                Some(Event::ClaimSucceeded {
                    resource: index,
                    took_ms: took,
                })
            }
            CallResult::Failed { error } => {
                r.view.consecutive_failures += 1;
                r.view.last_error = Some(error.clone());
                r.view.out_of_place_since_ms.get_or_insert(r.started_ms);
                if call.kind == CallKind::Claim {
                    r.view.last_claim_took_ms = Some(now_ms.saturating_sub(r.started_ms));
                }
                // Back off, then observe first: the failed call may have taken effect.
                r.claim_next = false;
                let exponent = r.view.consecutive_failures.saturating_sub(1).min(16);
                let base = config
                    .retry_min_ms
                    .saturating_mul(1 << exponent)
                    .min(config.retry_max_ms);
                let jittered = rng.gen_range(base / 2..=base.max(1));
                r.next_at_ms = now_ms + jittered;
                Some(Event::Failed {
                    resource: index,
                    kind: call.kind,
                    error,
                })
            }
        }
    }

    /// True when some resource has been out of place for longer than the hand-off limit.
    pub(crate) fn failing_too_long(&self, now_ms: u64) -> bool {
        self.resources.iter().any(|r| {
            r.view
                .out_of_place_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= self.config.hand_off_after_ms)
        })
    }
}
