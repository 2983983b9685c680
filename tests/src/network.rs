//! The test network: a bridge in the host namespace and one network namespace per node on it,
//! plus nftables DROP rules inside a node's namespace to cut it off from its peers.
//!
//! Layout of one [`Network`] with subnet `10.77.S.0/24` (S chosen unused on this machine):
//!
//! ```text
//! host namespace:  bridge hae<tag>b  10.77.S.1/24   (left free for the AWS emulator)
//!                    ├── veth hae<tag>h1 ── netns hae<tag>n1: eth0 10.77.S.11/24, lo
//!                    ├── veth hae<tag>h2 ── netns hae<tag>n2: eth0 10.77.S.12/24, lo
//!                    └── …
//! ```
//!
//! `<tag>` is `<pid>-<counter>` in base 36, so names are unique per process and per instance,
//! fit Linux's 15-character interface names, and tell which process made them: a later run
//! removes what a crashed run left (see [`remove_leftovers`]). The node namespaces have no
//! default route, and the host does not forward, so agents reach nothing but one another and
//! the bridge address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::command::{self, plumbing, PLUMBING_TIMEOUT};
use crate::system::{require_root, require_tool};

/// Every name the harness gives a namespace or an interface starts with this.
const PREFIX: &str = "hae";
/// The nftables table the harness adds inside a node's namespace.
const TABLE: &str = "ha_e2e";
/// Node ids are 1..=9: the address of node N is `.1N`, and the id is one character of names.
const MAX_NODE_ID: u64 = 9;
/// Linux's limit on interface names (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;
/// Instances per process; the counter is at most two base-36 characters of the names.
const MAX_INSTANCES: u32 = 36 * 36;

static INSTANCES: AtomicU32 = AtomicU32::new(0);
/// Held while a subnet is chosen and taken, so that parallel tests never pick the same one.
static SUBNET_CHOICE: Mutex<()> = Mutex::new(());
/// Whether this process has already removed the leftovers of earlier runs.
static LEFTOVERS_REMOVED: Mutex<bool> = Mutex::new(false);

/// One direction of a cut, seen from the node whose namespace holds the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Drop packets the node receives from the peers (its `input` hook).
    Inbound,
    /// Drop packets the node sends to the peers (its `output` hook).
    Outbound,
    /// Both.
    Both,
}

/// Packets dropped so far by a node's harness rules, per hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub inbound: u64,
    pub outbound: u64,
}

/// A bridge plus one namespace per node. Dropping it removes everything it created (and kills
/// any process still running in its namespaces).
pub struct Network {
    tag: String,
    subnet: u8,
    node_ids: Vec<u64>,
    bridge_created: bool,
    namespaces: Vec<String>,
    host_veths: Vec<String>,
}

impl Network {
    /// Creates the bridge and one namespace per node id (each in 1..=9).
    pub fn create(node_ids: &[u64]) -> Result<Network> {
        require_root()?;
        require_tool("ip")?;
        require_tool("nft")?;
        ensure!(!node_ids.is_empty(), "a network needs at least one node");
        let mut sorted = node_ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        ensure!(
            sorted.len() == node_ids.len(),
            "node ids must be unique: {node_ids:?}"
        );
        ensure!(
            sorted.iter().all(|id| (1..=MAX_NODE_ID).contains(id)),
            "node ids must be in 1..={MAX_NODE_ID}: {node_ids:?}"
        );
        remove_leftovers()?;

        let instance = INSTANCES.fetch_add(1, Ordering::SeqCst);
        ensure!(
            instance < MAX_INSTANCES,
            "more than {MAX_INSTANCES} networks in one process"
        );
        let pid = std::process::id();
        let mut network = Network {
            tag: format!("{}-{}", base36(pid), base36(instance)),
            subnet: 0,
            node_ids: node_ids.to_vec(),
            bridge_created: false,
            namespaces: Vec::new(),
            host_veths: Vec::new(),
        };
        // From here on, an error drops `network`, which removes what was already created.
        network.create_bridge(pid, instance)?;
        for &id in node_ids {
            network.create_node(id)?;
        }
        Ok(network)
    }

    fn create_bridge(&mut self, pid: u32, instance: u32) -> Result<()> {
        let bridge = self.bridge();
        check_interface_name(&bridge)?;
        let _choosing = SUBNET_CHOICE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let subnet = free_subnet(pid, instance)?;
        plumbing("ip", ["link", "add", &bridge, "type", "bridge"])?;
        self.bridge_created = true;
        let address = format!("10.77.{subnet}.1/24");
        plumbing("ip", ["addr", "add", &address, "dev", &bridge])?;
        plumbing("ip", ["link", "set", &bridge, "up"])?;
        self.subnet = subnet;
        Ok(())
    }

    fn create_node(&mut self, id: u64) -> Result<()> {
        let namespace = self.namespace(id);
        let host_veth = self.host_veth(id);
        let peer_veth = format!("{PREFIX}{}p{id}", self.tag);
        check_interface_name(&host_veth)?;
        check_interface_name(&peer_veth)?;
        plumbing("ip", ["netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        plumbing(
            "ip",
            [
                "link", "add", &host_veth, "type", "veth", "peer", "name", &peer_veth,
            ],
        )?;
        self.host_veths.push(host_veth.clone());
        plumbing("ip", ["link", "set", &peer_veth, "netns", &namespace])?;
        let address = format!("{}/24", self.address(id));
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", namespace.as_str()];
            all.extend_from_slice(args);
            plumbing("ip", all)
        };
        inside(&["link", "set", &peer_veth, "name", "eth0"])?;
        inside(&["addr", "add", &address, "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        plumbing("ip", ["link", "set", &host_veth, "master", &self.bridge()])?;
        plumbing("ip", ["link", "set", &host_veth, "up"])?;
        Ok(())
    }

    /// The node ids, in the order given to [`Network::create`].
    pub fn node_ids(&self) -> &[u64] {
        &self.node_ids
    }

    /// The instance tag in every name of this network (`<pid>-<counter>`, base 36).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The bridge's name (in the host namespace).
    pub fn bridge(&self) -> String {
        format!("{PREFIX}{}b", self.tag)
    }

    /// The name of node `id`'s network namespace.
    pub fn namespace(&self, id: u64) -> String {
        format!("{PREFIX}{}n{id}", self.tag)
    }

    /// The host-side end of node `id`'s veth pair (a port of the bridge).
    pub fn host_veth(&self, id: u64) -> String {
        format!("{PREFIX}{}h{id}", self.tag)
    }

    /// Node `id`'s address, `10.77.S.1<id>`.
    pub fn address(&self, id: u64) -> Ipv4Addr {
        // Node ids are checked to be 1..=9 in `create`.
        Ipv4Addr::new(10, 77, self.subnet, 10 + id as u8)
    }

    /// The bridge's address in the host namespace, `10.77.S.1`: where host-side services the
    /// agents talk to (an AWS emulator) listen.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// The subnet, `10.77.S.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.77.{}.0/24", self.subnet)
    }

    /// A command that runs `program` inside node `id`'s namespace (`ip netns exec`, which
    /// execs the program in place: the child's pid is the program's pid).
    pub fn command_in(&self, id: u64, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.namespace(id))
            .arg(program);
        command
    }

    /// The pids of the processes running in node `id`'s namespace.
    pub fn processes(&self, id: u64) -> Result<Vec<i32>> {
        self.check_node(id)?;
        processes_in(&self.namespace(id))
    }

    /// One ICMP echo from node `from` to `to`, waiting at most a second: whether it was answered.
    pub fn ping(&self, from: u64, to: Ipv4Addr) -> Result<bool> {
        require_tool("ping")?;
        let mut command = self.command_in(from, "ping");
        command
            .args(["-c", "1", "-W", "1", "-q"])
            .arg(to.to_string());
        let output = command::run(&mut command, None, Duration::from_secs(5))?;
        Ok(output.status.success())
    }

    /// Pings from `from` to `to` until one is answered, for at most `timeout` (a fresh veth
    /// can take a moment to pass traffic).
    pub fn wait_for_ping(&self, from: u64, to: Ipv4Addr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // Each attempt takes up to a second; the count bound backs up the time bound.
        for _ in 0..=timeout.as_secs().saturating_add(1) {
            if self.ping(from, to)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "node {from} cannot ping {to} within {} ms",
            timeout.as_millis()
        )
    }

    /// Cuts node `id` off from every other node, both ways. Traffic with the bridge address
    /// (the host side) still flows.
    pub fn isolate(&self, id: u64) -> Result<()> {
        let others: Vec<u64> = self.others(id);
        self.cut(id, Direction::Both, &others)
    }

    /// Adds DROP rules in node `id`'s namespace for traffic with the nodes `peers`, in the
    /// given direction. Cuts add up; [`Network::heal`] removes them all.
    pub fn cut(&self, id: u64, direction: Direction, peers: &[u64]) -> Result<()> {
        self.check_node(id)?;
        ensure!(!peers.is_empty(), "a cut needs at least one peer");
        for &peer in peers {
            self.check_node(peer)?;
            ensure!(peer != id, "node {id} cannot be cut off from itself");
        }
        let set = peers
            .iter()
            .map(|&peer| self.address(peer).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut script = format!(
            "add table inet {TABLE}\n\
             add chain inet {TABLE} input {{ type filter hook input priority 0 ; policy accept ; }}\n\
             add chain inet {TABLE} output {{ type filter hook output priority 0 ; policy accept ; }}\n"
        );
        if matches!(direction, Direction::Inbound | Direction::Both) {
            script.push_str(&format!(
                "add rule inet {TABLE} input ip saddr {{ {set} }} counter drop\n"
            ));
        }
        if matches!(direction, Direction::Outbound | Direction::Both) {
            script.push_str(&format!(
                "add rule inet {TABLE} output ip daddr {{ {set} }} counter drop\n"
            ));
        }
        self.nft(id, &script)
            .with_context(|| format!("cannot cut node {id} off from nodes {peers:?}"))
    }

    /// Removes every harness rule from node `id`'s namespace (idempotent).
    pub fn heal(&self, id: u64) -> Result<()> {
        self.check_node(id)?;
        // Adding the table first makes the deletion succeed when there is none.
        self.nft(
            id,
            &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
        )
        .with_context(|| format!("cannot heal node {id}"))
    }

    /// [`Network::heal`] for every node.
    pub fn heal_all(&self) -> Result<()> {
        for &id in &self.node_ids {
            self.heal(id)?;
        }
        Ok(())
    }

    /// Packets dropped so far by node `id`'s harness rules (zero when it has none).
    pub fn drop_counts(&self, id: u64) -> Result<DropCounts> {
        self.check_node(id)?;
        let mut command = self.command_in(id, "nft");
        command.args(["-j", "list", "table", "inet", TABLE]);
        let output = command::run(&mut command, None, PLUMBING_TIMEOUT)?;
        if !output.status.success() {
            if output.stderr.contains("No such file or directory") {
                return Ok(DropCounts::default());
            }
            bail!(
                "cannot list the rules of node {id}: {}",
                output.stderr.trim()
            );
        }
        parse_drop_counts(&output.stdout)
    }

    fn nft(&self, id: u64, script: &str) -> Result<()> {
        let mut command = self.command_in(id, "nft");
        command.args(["-f", "-"]);
        command::run_checked(&mut command, Some(script), PLUMBING_TIMEOUT)?;
        Ok(())
    }

    fn others(&self, id: u64) -> Vec<u64> {
        self.node_ids
            .iter()
            .copied()
            .filter(|&other| other != id)
            .collect()
    }

    fn check_node(&self, id: u64) -> Result<()> {
        ensure!(
            self.node_ids.contains(&id),
            "node {id} is not part of this network (nodes {:?})",
            self.node_ids
        );
        Ok(())
    }

    /// Removes everything this network created; returns what could not be removed.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for namespace in &self.namespaces {
            if let Err(error) = kill_processes_in(namespace) {
                problems.push(format!("{error:#}"));
            }
        }
        // Deleting a host-side veth deletes its peer in the namespace too.
        for veth in self.host_veths.drain(..) {
            if link_exists(&veth) {
                if let Err(error) = plumbing("ip", ["link", "del", &veth]) {
                    problems.push(format!("{error:#}"));
                }
            }
        }
        for namespace in self.namespaces.drain(..) {
            if let Err(error) = plumbing("ip", ["netns", "del", &namespace]) {
                problems.push(format!("{error:#}"));
            }
        }
        if self.bridge_created {
            self.bridge_created = false;
            if let Err(error) = plumbing("ip", ["link", "del", &self.bridge()]) {
                problems.push(format!("{error:#}"));
            }
        }
        problems
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!(
                "harness: tearing down network {} left problems (the next run removes leftovers):\n  {}",
                self.tag,
                problems.join("\n  ")
            );
        }
    }
}

/// Names of the network namespaces on this machine.
pub fn existing_namespaces() -> Result<Vec<String>> {
    let listing = plumbing("ip", ["netns", "list"])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Names of the network interfaces in the host namespace.
pub fn existing_links() -> Result<Vec<String>> {
    let listing = plumbing("ip", ["-o", "link", "show"])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect())
}

/// Removes namespaces and interfaces with the harness's prefix that belong to a process that
/// no longer runs (a crashed or killed earlier run), killing any process left inside them.
/// Also removes those tagged with this process's own pid: they can only come from an earlier
/// process that had the same pid, because this runs before this process creates anything
/// (see [`remove_leftovers`]). Returns the names it removed.
fn remove_stale_resources() -> Result<Vec<String>> {
    let own_pid = std::process::id();
    let stale = |name: &str| match owner_pid(name) {
        Some(pid) => pid == own_pid || !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    };
    let mut removed = Vec::new();
    let namespaces: Vec<String> = existing_namespaces()?
        .into_iter()
        .filter(|name| stale(name))
        .collect();
    for namespace in &namespaces {
        kill_processes_in(namespace)?;
    }
    // Links before namespaces: deleting a host-side veth removes its peer at once, whereas a
    // deleted namespace takes its interfaces down asynchronously.
    for link in existing_links()? {
        if stale(&link) {
            // Deleting one end of a veth pair removes the other, so a link listed a moment
            // ago may be gone: only a link that still exists after a failed delete is an error.
            if let Err(error) = plumbing("ip", ["link", "del", &link]) {
                if link_exists(&link) {
                    return Err(error);
                }
            }
            removed.push(link);
        }
    }
    for namespace in namespaces {
        plumbing("ip", ["netns", "del", &namespace])?;
        removed.push(namespace);
    }
    Ok(removed)
}

/// Removes what crashed earlier runs of the harness left behind (namespaces, veths, bridges,
/// and the processes inside those namespaces). Runs once per process, before its first
/// network is created; [`Network::create`] calls it, so callers need not.
pub fn remove_leftovers() -> Result<()> {
    let mut done = LEFTOVERS_REMOVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*done {
        let removed =
            remove_stale_resources().context("cannot remove leftovers of earlier runs")?;
        if !removed.is_empty() {
            eprintln!(
                "harness: removed leftovers of earlier runs: {}",
                removed.join(" ")
            );
        }
        *done = true;
    }
    Ok(())
}

/// The pid encoded in a harness name (`hae<pid36>-…`), or `None` for any other name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty()
        || !pid
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    u32::from_str_radix(pid, 36).ok()
}

fn link_exists(name: &str) -> bool {
    command::run(
        Command::new("ip").args(["link", "show", "dev", name]),
        None,
        PLUMBING_TIMEOUT,
    )
    .is_ok_and(|output| output.status.success())
}

/// The pids of the processes running in `namespace`.
fn processes_in(namespace: &str) -> Result<Vec<i32>> {
    let pids = plumbing("ip", ["netns", "pids", namespace])?;
    Ok(pids
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// SIGKILLs every process in `namespace` and waits (bounded) until none is left.
fn kill_processes_in(namespace: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..100 {
        let pids = processes_in(namespace)?;
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            // The process may have exited meanwhile; that is what we want anyway.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("processes in namespace {namespace} survived SIGKILL for 5 s")
}

/// Picks S such that nothing on this machine uses 10.77.S.0/24: no address, no route. The
/// search starts at a point derived from the pid and instance so that concurrent processes
/// rarely start at the same S; within one process the caller holds [`SUBNET_CHOICE`].
fn free_subnet(pid: u32, instance: u32) -> Result<u8> {
    let addresses = plumbing("ip", ["-4", "-o", "addr", "show"])?;
    let routes = plumbing("ip", ["-4", "route", "show", "table", "all"])?;
    let start = (pid as u64 * 7 + instance as u64 * 13) % 254;
    for offset in 0..254 {
        let candidate = ((start + offset) % 254 + 1) as u8;
        let prefix = format!("10.77.{candidate}.");
        if !addresses.contains(&prefix) && !routes.contains(&prefix) {
            return Ok(candidate);
        }
    }
    bail!("every subnet 10.77.1-254.0/24 is in use on this machine")
}

fn check_interface_name(name: &str) -> Result<()> {
    ensure!(
        name.len() <= MAX_INTERFACE_NAME,
        "interface name {name} is longer than {MAX_INTERFACE_NAME} characters"
    );
    Ok(())
}

fn base36(mut value: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Sums the `counter` statements of `nft -j list table` output per chain.
fn parse_drop_counts(json: &str) -> Result<DropCounts> {
    let document: serde_json::Value =
        serde_json::from_str(json).context("cannot parse `nft -j` output")?;
    let items = document["nftables"]
        .as_array()
        .context("`nft -j` output has no `nftables` array")?;
    let mut per_chain: BTreeMap<String, u64> = BTreeMap::new();
    for rule in items.iter().filter_map(|item| item.get("rule")) {
        let chain = rule["chain"].as_str().unwrap_or_default().to_string();
        let packets: u64 = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|expression| expression.get("counter")?.get("packets")?.as_u64())
            .sum();
        *per_chain.entry(chain).or_default() += packets;
    }
    Ok(DropCounts {
        inbound: per_chain.get("input").copied().unwrap_or(0),
        outbound: per_chain.get("output").copied().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_the_owner_pid() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let pid = 4_194_304; // Linux's largest pid_max
        let tag = format!("{}-{}", base36(pid), base36(MAX_INSTANCES - 1));
        let bridge = format!("{PREFIX}{tag}b");
        let veth = format!("{PREFIX}{tag}h9");
        assert!(veth.len() <= MAX_INTERFACE_NAME, "{veth} too long");
        assert_eq!(owner_pid(&bridge), Some(pid));
        assert_eq!(owner_pid(&veth), Some(pid));
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("haesetup123"), None);
        assert_eq!(owner_pid("hae-0b"), None);
    }

    #[test]
    fn drop_counts_are_summed_per_chain() {
        let json = r#"{"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "ha_e2e", "handle": 1}},
            {"chain": {"family": "inet", "table": "ha_e2e", "name": "input", "handle": 1}},
            {"rule": {"family": "inet", "table": "ha_e2e", "chain": "input", "handle": 3,
                      "expr": [{"match": {}}, {"counter": {"packets": 2, "bytes": 168}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "ha_e2e", "chain": "input", "handle": 4,
                      "expr": [{"counter": {"packets": 3, "bytes": 100}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "ha_e2e", "chain": "output", "handle": 5,
                      "expr": [{"counter": {"packets": 7, "bytes": 100}}, {"drop": null}]}}
        ]}"#;
        assert_eq!(
            parse_drop_counts(json).unwrap(),
            DropCounts {
                inbound: 5,
                outbound: 7
            }
        );
    }
}
