//! End-to-end tests of ha-agent: real agent processes, each in its own network namespace on a
//! bridge, and, for the `aws_*`, `health_*`, `switchover_*` and `hooks_*` tests, the AWS
//! emulator behind a fault proxy. A table of contents: each test is one scenario of
//! `ha_agent_e2e::scenarios`, `ha_agent_e2e::aws_scenarios` or
//! `ha_agent_e2e::health_scenarios`, where its steps and assertions are. Needs root, what
//! `bash scripts/setup` installs (moto among it), and the `ha-agent` binary built
//! (`cargo build -p ha-agent`, or set `HA_AGENT_BIN`).

use anyhow::Result;
use ha_agent_e2e::{aws_scenarios, health_scenarios, scenarios};

// ---- the harness's own network plumbing (no agents) ----

#[test]
fn plumbing_isolate_blocks_traffic_and_heal_restores_it() -> Result<()> {
    scenarios::plumbing_isolate_blocks_traffic_and_heal_restores_it()
}

#[test]
fn plumbing_one_way_cuts_drop_only_their_direction() -> Result<()> {
    scenarios::plumbing_one_way_cuts_drop_only_their_direction()
}

#[test]
fn plumbing_teardown_removes_everything() -> Result<()> {
    scenarios::plumbing_teardown_removes_everything()
}

// ---- agents ----

#[test]
fn generated_configs_pass_check_config() -> Result<()> {
    scenarios::generated_configs_pass_check_config()
}

#[test]
fn sigkill_leader_elects_new_leader() -> Result<()> {
    scenarios::sigkill_leader_elects_new_leader()
}

#[test]
fn sigstop_leader_elects_new_leader_and_old_leader_follows_after_resume() -> Result<()> {
    scenarios::sigstop_leader_elects_new_leader_and_old_leader_follows_after_resume()
}

#[test]
fn partitioned_leader_steps_down_and_follows_after_heal() -> Result<()> {
    scenarios::partitioned_leader_steps_down_and_follows_after_heal()
}

#[test]
fn sigstop_follower_keeps_leader() -> Result<()> {
    scenarios::sigstop_follower_keeps_leader()
}

#[test]
fn sigterm_leader_hands_off() -> Result<()> {
    scenarios::sigterm_leader_hands_off()
}

// ---- agents against the AWS emulator (moto, through a fault proxy) ----

#[test]
fn aws_sigkill_leader_moves_every_resource() -> Result<()> {
    aws_scenarios::aws_sigkill_leader_moves_every_resource()
}

#[test]
fn aws_sigstop_leader_moves_every_resource() -> Result<()> {
    aws_scenarios::aws_sigstop_leader_moves_every_resource()
}

#[test]
fn aws_partitioned_leader_stops_claiming_after_its_lease() -> Result<()> {
    aws_scenarios::aws_partitioned_leader_stops_claiming_after_its_lease()
}

#[test]
fn aws_throttling_and_5xx_still_converge() -> Result<()> {
    aws_scenarios::aws_throttling_and_5xx_still_converge()
}

#[test]
fn aws_check_config_rejects_and_status_reports_the_emulator() -> Result<()> {
    aws_scenarios::aws_check_config_rejects_and_status_reports_the_emulator()
}

// ---- health checks, operator controls and notify hooks (a real HTTP service per node) ----

#[test]
fn health_unhealthy_leader_hands_off_and_eip_follows() -> Result<()> {
    health_scenarios::health_unhealthy_leader_hands_off_and_eip_follows()
}

#[test]
fn health_all_unhealthy_nothing_moves() -> Result<()> {
    health_scenarios::health_all_unhealthy_nothing_moves()
}

#[test]
fn switchover_to_moves_the_eip_on_command() -> Result<()> {
    health_scenarios::switchover_to_moves_the_eip_on_command()
}

#[test]
fn hooks_run_with_the_right_environment_in_order() -> Result<()> {
    health_scenarios::hooks_run_with_the_right_environment_in_order()
}
