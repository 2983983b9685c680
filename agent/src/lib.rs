//! ha-agent: a failover agent for AWS EC2.
//!
//! Agents on the primary, the standbys and an optional witness form a small Raft group and keep
//! exactly one leader while a majority is alive. The decisions live in the deterministic
//! `ha_agent_core` crate; this crate is the shell around it: configuration ([`config`]), the
//! durable state directory ([`store`]), the authenticated peer transport ([`transport`]), the
//! status socket ([`status`]), and the daemon loop that ties them together ([`daemon`]).

pub mod cli;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod hooks;
pub mod logging;
pub mod probes;
pub mod status;
pub mod store;
pub mod systemd;
pub mod transport;

#[cfg(test)]
mod test_support;
