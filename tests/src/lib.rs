//! The end-to-end test harness of ha-agent: real `ha-agent run` processes, each in its own
//! network namespace on a bridge, driven with signals and nftables DROP rules and observed
//! through `ha-agent status --json`, and, with an AWS world, against the AWS emulator (moto)
//! behind a fault proxy, with the floating resources observed through the emulator's API.
//!
//! - [`network`]: the bridge, the namespaces, the veth pairs, nftables cuts, and the removal
//!   of what crashed earlier runs left behind.
//! - [`cluster`]: per-node config, secret and state; the agent processes (start, SIGKILL,
//!   SIGSTOP/SIGCONT, SIGTERM, restart); bounded waits on their statuses.
//! - [`status`]: the JSON of `ha-agent status --json` and the single-leader rule.
//! - [`aws`]: the AWS emulator (moto), the fault proxy, and each cluster's AWS world, built
//!   and observed through the real SDK.
//! - [`scenarios`], [`aws_scenarios`], [`health_scenarios`]: the end-to-end scenarios behind
//!   `tests/e2e.rs`.
//!
//! Everything here needs root and fails (never skips) without it. Names of namespaces and
//! interfaces start with `hae` and carry the creating process's pid, so tests may run in
//! parallel, and a later run removes what a killed run left.

pub mod aws;
pub mod aws_scenarios;
pub mod cluster;
mod command;
pub mod health_scenarios;
pub mod keepalived;
pub mod measure;
pub mod network;
pub mod scenarios;
pub mod status;
mod system;

pub use aws::{wall_clock, AwsWorld, Claim, Emulator, Faults, Holder, Holders};
pub use cluster::{Cluster, ClusterSpec, Exit, NodeRole, NodeSpec, AGENT_PORT};
pub use network::{remove_leftovers, Direction, DropCounts, Network};
pub use status::{Leader, PeerStatus, ResourceStatus, Role, Status, Verdict};
pub use system::{agent_binary, report, require_root};
