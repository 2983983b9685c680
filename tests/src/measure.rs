//! What the benchmark and the soak compute from their observations: order statistics, the
//! split-brain measures over the fault proxy's claim log and over belief intervals, and the
//! idle cost of a process group (resident memory, CPU, bytes on the peer links).

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::command::{run_checked, PLUMBING_TIMEOUT};
use crate::network::Network;

/// Median, 95th percentile and worst of a sample (nearest-rank percentiles).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub trials: usize,
    pub median_s: f64,
    pub p95_s: f64,
    pub worst_s: f64,
}

pub fn summarize(values: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    };
    Summary {
        trials: sorted.len(),
        median_s: rank(0.5),
        p95_s: rank(0.95),
        worst_s: sorted[sorted.len() - 1],
    }
}

/// A claim reduced to what the measures need: who sent it, when it arrived and was answered.
#[derive(Clone, Copy, Debug)]
pub struct ClaimSpan {
    pub node: u64,
    pub arrived: f64,
    pub answered: f64,
}

/// Total length of a union of intervals.
pub fn union_length(mut intervals: Vec<(f64, f64)>) -> f64 {
    intervals.retain(|(a, b)| b > a);
    intervals.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (a, b) in intervals {
        current = match current {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

/// Split-brain seconds from the claim log alone: each node's *claim window* in the observed
/// period is [its first claim's arrival, its last claim's answer]; the measure is the length of
/// the union of the pairwise overlaps of the windows of different nodes. Zero when the nodes'
/// claims do not interleave or overlap in flight.
pub fn claim_window_split_brain(claims: &[ClaimSpan]) -> f64 {
    let mut windows: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for claim in claims {
        let window = windows
            .entry(claim.node)
            .or_insert((claim.arrived, claim.answered));
        window.0 = window.0.min(claim.arrived);
        window.1 = window.1.max(claim.answered);
    }
    let windows: Vec<(f64, f64)> = windows.into_values().collect();
    let mut overlaps = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            overlaps.push((a.0.max(b.0), a.1.min(b.1)));
        }
    }
    union_length(overlaps) + 0.0
}

/// Split-brain seconds from belief intervals (when each node believed it should hold the
/// address, e.g. VRRP MASTER while its process ran): the length of the union of every maximal
/// interval in which two or more nodes believed so, counting only those intervals during which
/// one of the believers had a claim arriving or in flight.
pub fn belief_split_brain(beliefs: &BTreeMap<u64, Vec<(f64, f64)>>, claims: &[ClaimSpan]) -> f64 {
    // Sweep over every boundary.
    let mut points: Vec<f64> = beliefs
        .values()
        .flatten()
        .flat_map(|&(a, b)| [a, b])
        .collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let believers = |t: f64| -> Vec<u64> {
        beliefs
            .iter()
            .filter(|(_, spans)| spans.iter().any(|&(a, b)| a <= t && t < b))
            .map(|(&id, _)| id)
            .collect()
    };
    // Maximal intervals with ≥ 2 believers, with the set of believers met in them.
    let mut intervals: Vec<(f64, f64, Vec<u64>)> = Vec::new();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let who = believers((a + b) / 2.0);
        if who.len() < 2 {
            continue;
        }
        match intervals.last_mut() {
            Some(last) if (last.1 - a).abs() < 1e-9 => {
                last.1 = b;
                for id in who {
                    if !last.2.contains(&id) {
                        last.2.push(id);
                    }
                }
            }
            _ => intervals.push((a, b, who)),
        }
    }
    intervals
        .into_iter()
        .filter(|(a, b, who)| {
            claims
                .iter()
                .any(|c| who.contains(&c.node) && c.arrived <= *b && c.answered >= *a)
        })
        .map(|(a, b, _)| b - a)
        .sum::<f64>()
        .max(0.0)
        + 0.0
}

// ---- idle cost ---------------------------------------------------------------------------------

/// The idle cost of one node's process group over a window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleCost {
    pub node: u64,
    pub rss_mib: f64,
    pub cpu_percent_of_one_core: f64,
    pub peer_bytes_per_s: f64,
    pub seconds: f64,
}

fn clock_ticks() -> f64 {
    // Linux's USER_HZ is 100 on every architecture the project targets.
    100.0
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU ticks of `pid`.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

const COUNTER_TABLE: &str = "ha_bench_count";

/// Adds nftables counters in node `id`'s namespace for its traffic with `peers` (both ways).
pub fn add_peer_counters(network: &Network, id: u64, peers: &[u64]) -> Result<()> {
    let set = peers
        .iter()
        .map(|&p| network.address(p).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        "add table inet {COUNTER_TABLE}\ndelete table inet {COUNTER_TABLE}\n\
         add table inet {COUNTER_TABLE}\n\
         add chain inet {COUNTER_TABLE} input {{ type filter hook input priority -10 ; policy accept ; }}\n\
         add chain inet {COUNTER_TABLE} output {{ type filter hook output priority -10 ; policy accept ; }}\n\
         add rule inet {COUNTER_TABLE} input ip saddr {{ {set} }} counter\n\
         add rule inet {COUNTER_TABLE} output ip daddr {{ {set} }} counter\n"
    );
    let mut command = network.command_in(id, "nft");
    command.args(["-f", "-"]);
    run_checked(&mut command, Some(&script), PLUMBING_TIMEOUT)?;
    Ok(())
}

/// Bytes counted so far by node `id`'s peer counters.
pub fn peer_bytes(network: &Network, id: u64) -> Result<u64> {
    let mut command = network.command_in(id, "nft");
    command.args(["-j", "list", "table", "inet", COUNTER_TABLE]);
    let output = run_checked(&mut command, None, PLUMBING_TIMEOUT)?;
    let json: serde_json::Value =
        serde_json::from_str(&output).context("cannot parse nft -j output")?;
    let mut total = 0;
    for item in json["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            total += expr["counter"]["bytes"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Measures, for `duration`, the idle cost of each node's processes (`pids(node)`), with the
/// peer counters added first.
pub fn idle_cost(
    network: &Network,
    nodes: &BTreeMap<u64, Vec<i32>>,
    duration: Duration,
) -> Result<Vec<IdleCost>> {
    let ids: Vec<u64> = nodes.keys().copied().collect();
    for &id in &ids {
        let peers: Vec<u64> = ids.iter().copied().filter(|&p| p != id).collect();
        add_peer_counters(network, id, &peers)?;
    }
    let start = Instant::now();
    let mut before = BTreeMap::new();
    for (&id, pids) in nodes {
        let cpu: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        before.insert(id, (cpu, peer_bytes(network, id)?));
    }
    std::thread::sleep(duration);
    let seconds = start.elapsed().as_secs_f64();
    let mut costs = Vec::new();
    for (&id, pids) in nodes {
        let cpu: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        let bytes = peer_bytes(network, id)?;
        let (cpu0, bytes0) = before[&id];
        costs.push(IdleCost {
            node: id,
            rss_mib: pids.iter().map(|&p| rss_kib(p)).sum::<u64>() as f64 / 1024.0,
            cpu_percent_of_one_core: (cpu.saturating_sub(cpu0)) as f64 / clock_ticks() / seconds
                * 100.0,
            peer_bytes_per_s: bytes.saturating_sub(bytes0) as f64 / seconds,
            seconds,
        });
    }
    for &id in &ids {
        let mut command = network.command_in(id, "nft");
        command.args(["delete", "table", "inet", COUNTER_TABLE]);
        let _ = run_checked(&mut command, None, PLUMBING_TIMEOUT);
    }
    Ok(costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summarize(&values);
        assert_eq!((s.median_s, s.p95_s, s.worst_s), (10.0, 19.0, 20.0));
    }

    #[test]
    fn claim_windows_overlap_only_when_nodes_interleave() {
        let c = |node, arrived, answered| ClaimSpan {
            node,
            arrived,
            answered,
        };
        assert_eq!(
            claim_window_split_brain(&[c(1, 0.0, 0.1), c(2, 1.0, 1.1)]),
            0.0
        );
        let v = claim_window_split_brain(&[c(1, 0.0, 0.1), c(2, 1.0, 1.1), c(1, 2.0, 2.1)]);
        assert!((v - 0.1).abs() < 1e-9, "{v}");
    }

    #[test]
    fn beliefs_count_only_with_a_claim() {
        let mut beliefs = BTreeMap::new();
        beliefs.insert(1, vec![(0.0, 10.0)]);
        beliefs.insert(2, vec![(4.0, 12.0)]);
        let claim = ClaimSpan {
            node: 2,
            arrived: 5.0,
            answered: 5.5,
        };
        assert!((belief_split_brain(&beliefs, &[claim]) - 6.0).abs() < 1e-9);
        assert_eq!(belief_split_brain(&beliefs, &[]), 0.0);
    }
}
