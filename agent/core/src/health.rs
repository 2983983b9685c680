//! Health: this node's checks with rise/fall hysteresis, and what peers say of theirs.
//!
//! A node is healthy when every check is up; a node with no checks is healthy. A check flips
//! down after `fall` consecutive failed probes and up after `rise` consecutive passes; it
//! starts down, so a node proves its health before it is preferred. Peers advertise their
//! health over the authenticated transport; an advert older than the staleness limit counts
//! as unknown (neither healthy nor reachable).

use std::collections::BTreeMap;

/// Hysteresis of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckRule {
    /// Consecutive passes before a down check counts as up.
    pub rise: u32,
    /// Consecutive failures before an up check counts as down.
    pub fall: u32,
}

/// What a node tells its peers about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthAdvert {
    pub healthy: bool,
    pub priority: i64,
    /// How long the node has been healthy without interruption (0 when unhealthy).
    pub healthy_for_ms: u64,
}

/// The state of one check, for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckView {
    pub up: bool,
    pub passes: u32,
    pub failures: u32,
    pub probes: u64,
}

#[derive(Debug)]
pub(crate) struct Health {
    rules: Vec<CheckRule>,
    checks: Vec<CheckView>,
    healthy_since_ms: Option<u64>,
    unhealthy_since_ms: u64,
    peers: BTreeMap<u64, (HealthAdvert, u64)>,
    stale_after_ms: u64,
}

impl Health {
    pub(crate) fn new(rules: Vec<CheckRule>, stale_after_ms: u64) -> Health {
        let checks = vec![CheckView::default(); rules.len()];
        let healthy_since_ms = rules.is_empty().then_some(0);
        Health {
            rules,
            checks,
            healthy_since_ms,
            unhealthy_since_ms: 0,
            peers: BTreeMap::new(),
            stale_after_ms,
        }
    }

    /// Records one probe result. Returns true when this node's health flipped.
    pub(crate) fn probe(&mut self, now_ms: u64, check: usize, passed: bool) -> bool {
        let Some(rule) = self.rules.get(check).copied() else {
            return false;
        };
        let was = self.healthy();
        let view = &mut self.checks[check];
        view.probes += 1;
        if passed {
            view.passes += 1;
            view.failures = 0;
            if !view.up && view.passes >= rule.rise {
                view.up = true;
            }
        } else {
            view.failures += 1;
            view.passes = 0;
            if view.up && view.failures >= rule.fall {
                view.up = false;
            }
        }
        let now = self.healthy();
        if now != was {
            self.healthy_since_ms = now.then_some(now_ms);
            if !now {
                self.unhealthy_since_ms = now_ms;
            }
        }
        now != was
    }

    /// Since when this node has been unhealthy (`None` while healthy).
    pub(crate) fn unhealthy_since(&self) -> Option<u64> {
        match self.healthy_since_ms {
            Some(_) => None,
            None => Some(self.unhealthy_since_ms),
        }
    }

    /// When the latest advert of `peer` arrived.
    pub(crate) fn peer_heard_at(&self, peer: u64) -> Option<u64> {
        self.peers.get(&peer).map(|(_, at)| *at)
    }

    pub(crate) fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.up)
    }

    pub(crate) fn checks(&self) -> Vec<CheckView> {
        self.checks.clone()
    }

    pub(crate) fn advert(&self, now_ms: u64, priority: i64) -> HealthAdvert {
        HealthAdvert {
            healthy: self.healthy(),
            priority,
            healthy_for_ms: self
                .healthy_since_ms
                .map_or(0, |since| now_ms.saturating_sub(since)),
        }
    }

    pub(crate) fn peer_advert(&mut self, now_ms: u64, peer: u64, advert: HealthAdvert) {
        self.peers.insert(peer, (advert, now_ms));
    }

    /// A peer's latest advert, if it is fresh.
    pub(crate) fn peer(&self, now_ms: u64, peer: u64) -> Option<HealthAdvert> {
        self.peers
            .get(&peer)
            .filter(|(_, at)| now_ms.saturating_sub(*at) <= self.stale_after_ms)
            .map(|(advert, _)| *advert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut h = Health::new(vec![CheckRule { rise: 2, fall: 3 }], 1000);
        assert!(!h.healthy(), "a check starts down");
        assert!(!h.probe(0, 0, true));
        assert!(h.probe(1, 0, true), "up after two passes");
        assert!(!h.probe(2, 0, false));
        assert!(!h.probe(3, 0, false));
        assert!(!h.probe(4, 0, true), "a pass resets the failure count");
        assert!(!h.probe(5, 0, false));
        assert!(!h.probe(6, 0, false));
        assert!(h.probe(7, 0, false), "down after three failures in a row");
        assert_eq!(h.advert(9, 5).healthy_for_ms, 0);
    }

    #[test]
    fn no_checks_is_healthy_and_stale_adverts_are_unknown() {
        let mut h = Health::new(vec![], 1000);
        assert!(h.healthy());
        assert_eq!(h.advert(500, 1).healthy_for_ms, 500);
        let advert = HealthAdvert {
            healthy: true,
            priority: 9,
            healthy_for_ms: 0,
        };
        h.peer_advert(100, 2, advert);
        assert_eq!(h.peer(1100, 2), Some(advert));
        assert_eq!(h.peer(1101, 2), None);
    }
}
