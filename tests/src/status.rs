//! The JSON object `ha-agent status --json` prints, and the single-leader rule the tests check.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// A node's Raft role as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Any role this harness does not know (a newer agent may report more).
    #[serde(other)]
    Other,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Other => "other",
        })
    }
}

/// One peer as a node sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct PeerStatus {
    pub id: u64,
    #[serde(default)]
    pub address: String,
    /// "voter" or "witness".
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub reachable: bool,
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
}

/// One floating resource in `ha-agent status --json`, as the node last observed it (only a
/// leader observes).
#[derive(Clone, Debug, Deserialize)]
pub struct ResourceStatus {
    /// `elastic-ip`, `route53-record` or `leader-parameter`.
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub in_place: Option<bool>,
    #[serde(default)]
    pub observed_ago_ms: Option<u64>,
    #[serde(default)]
    pub last_claim_ago_ms: Option<u64>,
    #[serde(default)]
    pub last_claim_took_ms: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// What `ha-agent status --json` reports. Fields this harness does not know are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub cluster: String,
    pub node_id: u64,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<u64>,
    #[serde(default)]
    pub leader_for_ms: Option<u64>,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// How long the node's lease still runs (leader only).
    #[serde(default)]
    pub lease_remaining_ms: Option<u64>,
    /// Set when every AWS call goes to an emulator (`aws.endpoint-url`).
    #[serde(default)]
    pub aws_endpoint: Option<String>,
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
    /// The JSON text as printed, for failure messages.
    #[serde(skip)]
    pub raw: String,
}

impl Status {
    /// Parses the output of `ha-agent status --json`.
    pub fn parse(json: &str) -> serde_json::Result<Status> {
        let mut status: Status = serde_json::from_str(json)?;
        status.raw = json.trim().to_string();
        Ok(status)
    }
}

impl fmt::Display for Status {
    /// One line: `node 2: follower, term 3, leader 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {}: {}, term {}, leader ",
            self.node_id, self.role, self.term
        )?;
        match self.leader_id {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("unknown"),
        }
    }
}

/// The leader a group of nodes agrees on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    pub term: u64,
}

impl fmt::Display for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (term {})", self.id, self.term)
    }
}

/// What a set of statuses, taken together, says about leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly one node reports role leader, and every node reports it as leader, in its term.
    Agreed(Leader),
    /// Not (yet) agreed; the text says why.
    Pending(String),
    /// Two nodes claim leadership of the same term: Raft's election safety is broken. Never
    /// transient, so waiting cannot fix it.
    Violation(String),
}

/// Judges the statuses of a group of nodes (one status per node).
pub fn judge(statuses: &[Status]) -> Verdict {
    let mut leaders_per_term: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for status in statuses.iter().filter(|s| s.role == Role::Leader) {
        leaders_per_term
            .entry(status.term)
            .or_default()
            .push(status.node_id);
    }
    if let Some((term, ids)) = leaders_per_term.iter().find(|(_, ids)| ids.len() > 1) {
        return Verdict::Violation(format!(
            "nodes {ids:?} all report role leader in term {term}: {}",
            summary(statuses)
        ));
    }
    let leaders: Vec<&Status> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
    let leader = match leaders.as_slice() {
        [] => {
            return Verdict::Pending(format!(
                "no node reports role leader: {}",
                summary(statuses)
            ))
        }
        [leader] => leader,
        _ => {
            return Verdict::Pending(format!(
                "{} nodes report role leader: {}",
                leaders.len(),
                summary(statuses)
            ))
        }
    };
    let agreed = statuses
        .iter()
        .all(|s| s.leader_id == Some(leader.node_id) && s.term == leader.term);
    if agreed {
        Verdict::Agreed(Leader {
            id: leader.node_id,
            term: leader.term,
        })
    } else {
        Verdict::Pending(format!(
            "node {} is leader in term {} but not every node follows it there: {}",
            leader.node_id,
            leader.term,
            summary(statuses)
        ))
    }
}

/// `node 1: leader, term 3, leader 1; node 2: …`
pub fn summary(statuses: &[Status]) -> String {
    statuses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, role: Role, term: u64, leader_id: Option<u64>) -> Status {
        Status {
            cluster: "e2e".to_string(),
            node_id,
            role,
            term,
            leader_id,
            leader_for_ms: None,
            peers: Vec::new(),
            lease_remaining_ms: None,
            aws_endpoint: None,
            resources: Vec::new(),
            raw: String::new(),
        }
    }

    #[test]
    fn parses_the_documented_fields_and_ignores_unknown_ones() {
        let json = r#"{"cluster":"e2e","node_id":2,"role":"follower","term":7,"leader_id":1,
            "leader_for_ms":null,"lease_ms":12,
            "peers":[{"id":1,"address":"10.77.3.11:7946","role":"voter","reachable":true,
                      "last_contact_ms":40,"extra":1},
                     {"id":3,"address":"10.77.3.13:7946","role":"witness","reachable":false,
                      "last_contact_ms":null}]}"#;
        let parsed = Status::parse(json).unwrap();
        assert_eq!(parsed.node_id, 2);
        assert_eq!(parsed.role, Role::Follower);
        assert_eq!(parsed.term, 7);
        assert_eq!(parsed.leader_id, Some(1));
        assert_eq!(parsed.leader_for_ms, None);
        assert_eq!(parsed.peers.len(), 2);
        assert!(parsed.peers[0].reachable);
        assert_eq!(parsed.peers[1].role, "witness");
        assert_eq!(parsed.peers[1].last_contact_ms, None);
        assert!(parsed.raw.starts_with('{'));

        assert_eq!(parsed.aws_endpoint, None);
        assert!(parsed.resources.is_empty());

        let with_aws = r#"{"cluster":"e2e","node_id":1,"role":"leader","term":3,"leader_id":1,
            "lease_remaining_ms":700,"aws_endpoint":"http://10.77.3.1:4000",
            "resources":[{"kind":"elastic-ip","id":"eipalloc-1","holder":"eni-1 10.77.3.11",
                          "in_place":true,"observed_ago_ms":5,"last_claim_ago_ms":null,
                          "last_claim_took_ms":null,"last_error":null}]}"#;
        let parsed = Status::parse(with_aws).unwrap();
        assert_eq!(parsed.lease_remaining_ms, Some(700));
        assert_eq!(
            parsed.aws_endpoint.as_deref(),
            Some("http://10.77.3.1:4000")
        );
        assert_eq!(parsed.resources.len(), 1);
        assert_eq!(parsed.resources[0].in_place, Some(true));

        let unknown_role =
            r#"{"cluster":"e2e","node_id":1,"role":"precandidate","term":1,"leader_id":null}"#;
        assert_eq!(Status::parse(unknown_role).unwrap().role, Role::Other);
    }

    #[test]
    fn one_leader_followed_by_all_is_agreed() {
        let statuses = [
            status(1, Role::Follower, 4, Some(2)),
            status(2, Role::Leader, 4, Some(2)),
            status(3, Role::Follower, 4, Some(2)),
        ];
        assert_eq!(judge(&statuses), Verdict::Agreed(Leader { id: 2, term: 4 }));
    }

    #[test]
    fn disagreement_is_pending() {
        let no_leader = [
            status(1, Role::Candidate, 5, None),
            status(2, Role::Follower, 4, None),
        ];
        assert!(matches!(judge(&no_leader), Verdict::Pending(_)));

        let stale_follower = [
            status(1, Role::Leader, 5, Some(1)),
            status(2, Role::Follower, 4, Some(3)),
        ];
        assert!(matches!(judge(&stale_follower), Verdict::Pending(_)));

        let follower_in_old_term = [
            status(1, Role::Leader, 5, Some(1)),
            status(2, Role::Follower, 4, Some(1)),
        ];
        assert!(matches!(judge(&follower_in_old_term), Verdict::Pending(_)));

        let old_leader_not_yet_stepped_down = [
            status(1, Role::Leader, 4, Some(1)),
            status(2, Role::Leader, 5, Some(2)),
            status(3, Role::Follower, 5, Some(2)),
        ];
        assert!(matches!(
            judge(&old_leader_not_yet_stepped_down),
            Verdict::Pending(_)
        ));
    }

    #[test]
    fn two_leaders_in_one_term_are_a_violation() {
        let statuses = [
            status(1, Role::Leader, 5, Some(1)),
            status(2, Role::Leader, 5, Some(2)),
        ];
        assert!(matches!(judge(&statuses), Verdict::Violation(_)));
    }
}
