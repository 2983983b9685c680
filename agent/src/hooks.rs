//! Notify hooks, as keepalived users know them: `on-leader`, `on-follower`, `on-fault`.
//!
//! One runner task executes the hooks one at a time, in the order the transitions happened,
//! so a hook never runs concurrently with itself or another. Each gets the environment
//! `HA_AGENT_CLUSTER`, `HA_AGENT_NODE_ID`, `HA_AGENT_EVENT`, `HA_AGENT_ROLE`, `HA_AGENT_TERM`
//! and `HA_AGENT_LEADER_ID` (empty when unknown), no stdin, and the configured timeout, after
//! which it is killed. Its output lines go to the log; a failure is logged, never fatal. The
//! Raft loop only queues a job (without waiting; a full queue drops it with a warning).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::HookSettings;

const QUEUE: usize = 64;

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    Leader,
    Follower,
    Fault,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Leader => "leader",
            HookEvent::Follower => "follower",
            HookEvent::Fault => "fault",
        }
    }

    fn key(self) -> &'static str {
        match self {
            HookEvent::Leader => "on-leader",
            HookEvent::Follower => "on-follower",
            HookEvent::Fault => "on-fault",
        }
    }
}

/// One hook to run.
#[derive(Clone, Debug)]
pub struct HookJob {
    pub event: HookEvent,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
}

/// The queue of hooks to run.
pub struct Hooks {
    queue: Option<mpsc::Sender<HookJob>>,
    settings: HookSettings,
}

impl Hooks {
    /// Starts the runner (none when no hook is configured).
    pub fn start(settings: &HookSettings, cluster: &str, node_id: u64) -> Hooks {
        let configured = settings.on_leader.is_some()
            || settings.on_follower.is_some()
            || settings.on_fault.is_some();
        if !configured {
            return Hooks {
                queue: None,
                settings: settings.clone(),
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, settings.clone(), cluster.to_string(), node_id));
        Hooks {
            queue: Some(tx),
            settings: settings.clone(),
        }
    }

    /// Queues the hook for `job.event`, if one is configured.
    pub fn fire(&self, job: HookJob) {
        let Some(queue) = &self.queue else { return };
        if command_for(&self.settings, job.event).is_none() {
            return;
        }
        if queue.try_send(job.clone()).is_err() {
            warn!(
                hook = job.event.key(),
                "hook queue full; this run of the hook is skipped"
            );
        }
    }
}

fn command_for(settings: &HookSettings, event: HookEvent) -> Option<&Vec<String>> {
    match event {
        HookEvent::Leader => settings.on_leader.as_ref(),
        HookEvent::Follower => settings.on_follower.as_ref(),
        HookEvent::Fault => settings.on_fault.as_ref(),
    }
}

async fn run(
    mut jobs: mpsc::Receiver<HookJob>,
    settings: HookSettings,
    cluster: String,
    node_id: u64,
) {
    while let Some(job) = jobs.recv().await {
        let Some(argv) = command_for(&settings, job.event) else {
            continue;
        };
        run_one(argv, &job, &cluster, node_id, settings.timeout).await;
    }
}

/// Runs one hook to completion or its timeout; returns whether it succeeded.
pub async fn run_one(
    argv: &[String],
    job: &HookJob,
    cluster: &str,
    node_id: u64,
    limit: Duration,
) -> bool {
    let hook = job.event.key();
    let spawned = Command::new(&argv[0])
        .args(&argv[1..])
        .env("HA_AGENT_CLUSTER", cluster)
        .env("HA_AGENT_NODE_ID", node_id.to_string())
        .env("HA_AGENT_EVENT", job.event.as_str())
        .env("HA_AGENT_ROLE", &job.role)
        .env("HA_AGENT_TERM", job.term.to_string())
        .env(
            "HA_AGENT_LEADER_ID",
            job.leader_id.map(|id| id.to_string()).unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            warn!(hook, command = %argv[0], error = %e, "hook could not be started");
            return false;
        }
    };
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(log_lines(hook, "stdout", out)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(log_lines(hook, "stderr", err)));
    let outcome = tokio::time::timeout(limit, child.wait()).await;
    let ok = match outcome {
        Ok(Ok(status)) if status.success() => {
            info!(hook, term = job.term, "hook finished");
            true
        }
        Ok(Ok(status)) => {
            warn!(hook, term = job.term, status = %status, "hook failed");
            false
        }
        Ok(Err(e)) => {
            warn!(hook, error = %e, "waiting for the hook failed");
            false
        }
        Err(_) => {
            let _ = child.kill().await;
            warn!(hook, timeout = %humantime::format_duration(limit), "hook timed out and was killed");
            false
        }
    };
    for task in [stdout, stderr].into_iter().flatten() {
        let _ = task.await;
    }
    ok
}

async fn log_lines(
    hook: &'static str,
    stream: &'static str,
    pipe: impl tokio::io::AsyncRead + Unpin,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(hook, stream, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event: HookEvent) -> HookJob {
        HookJob {
            event,
            role: "leader".into(),
            term: 7,
            leader_id: Some(2),
        }
    }

    #[tokio::test]
    async fn hooks_get_their_environment_and_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("ha-agent-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("env");
        let script = format!(
            "echo \"$HA_AGENT_CLUSTER $HA_AGENT_NODE_ID $HA_AGENT_EVENT $HA_AGENT_ROLE $HA_AGENT_TERM $HA_AGENT_LEADER_ID\" > {}",
            out.display()
        );
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        assert!(
            run_one(
                &argv,
                &job(HookEvent::Leader),
                "web",
                1,
                Duration::from_secs(5)
            )
            .await
        );
        let written = std::fs::read_to_string(&out).unwrap();
        assert_eq!(written.trim(), "web 1 leader leader 7 2");
        let slow = vec!["/bin/sleep".to_string(), "30".to_string()];
        let started = std::time::Instant::now();
        assert!(
            !run_one(
                &slow,
                &job(HookEvent::Fault),
                "web",
                1,
                Duration::from_millis(200)
            )
            .await
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let failing = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "exit 4".to_string(),
        ];
        assert!(
            !run_one(
                &failing,
                &job(HookEvent::Follower),
                "web",
                1,
                Duration::from_secs(5)
            )
            .await
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
