//! Health probes of the local service: HTTP, TCP and exec checks.
//!
//! Each check runs in its own task on its own interval and reports every result to the Raft
//! loop through a channel; a probe never blocks the loop, and one that hangs counts as a
//! failure at its timeout (an exec check's process is killed then). The core turns results
//! into health with rise/fall hysteresis.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use crate::config::{CheckKind, CheckSettings};

/// One probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub check: usize,
    pub passed: bool,
    pub latency: Duration,
    /// What happened, for status and logs: "200 OK", "connection refused", "exit 1", ...
    pub detail: String,
}

/// Starts one task per check; results arrive on `results` until the receiver is dropped.
pub fn start(checks: &[CheckSettings], results: mpsc::Sender<ProbeResult>) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client always builds");
    for (index, check) in checks.iter().enumerate() {
        let check = check.clone();
        let results = results.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(check.interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let result = probe(index, &check, &http).await;
                if results.send(result).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Runs one probe of `check`, bounded by its timeout.
pub async fn probe(index: usize, check: &CheckSettings, http: &reqwest::Client) -> ProbeResult {
    let started = Instant::now();
    let outcome = timeout(check.timeout, run(&check.kind, http, check.timeout)).await;
    let (passed, detail) = match outcome {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (
            false,
            format!(
                "no answer within {}",
                humantime::format_duration(check.timeout)
            ),
        ),
    };
    ProbeResult {
        check: index,
        passed,
        latency: started.elapsed(),
        detail,
    }
}

async fn run(kind: &CheckKind, http: &reqwest::Client, limit: Duration) -> Result<String, String> {
    match kind {
        CheckKind::Http {
            url,
            expect_status,
            body,
        } => {
            let response = http
                .get(url)
                .timeout(limit)
                .send()
                .await
                .map_err(|e| describe_reqwest(&e))?;
            let status = response.status();
            if !expect_status.contains(&status.as_u16()) {
                return Err(format!(
                    "status {status}, expected {}-{}",
                    expect_status.start(),
                    expect_status.end()
                ));
            }
            if let Some(needle) = body {
                let text = response.text().await.map_err(|e| describe_reqwest(&e))?;
                if !text.contains(needle.as_str()) {
                    return Err(format!("status {status}, but the body lacks {needle:?}"));
                }
            }
            Ok(format!("status {status}"))
        }
        CheckKind::Tcp { address } => {
            TcpStream::connect(address.as_str())
                .await
                .map_err(|e| format!("connect to {address}: {e}"))?;
            Ok(format!("connected to {address}"))
        }
        CheckKind::Exec { command } => {
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", command[0]))?;
            // Dropped at the timeout: kill_on_drop kills the process.
            let status = child
                .wait()
                .await
                .map_err(|e| format!("waiting for {}: {e}", command[0]))?;
            if status.success() {
                Ok("exit 0".into())
            } else {
                Err(match status.code() {
                    Some(code) => format!("exit {code}"),
                    None => "killed by a signal".into(),
                })
            }
        }
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn check(kind: CheckKind, timeout_ms: u64) -> CheckSettings {
        CheckSettings {
            name: "t".into(),
            kind,
            interval: Duration::from_millis(timeout_ms * 2),
            timeout: Duration::from_millis(timeout_ms),
            rise: 1,
            fall: 1,
        }
    }

    async fn http_server(status: &'static str, body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/healthz")
    }

    fn http(url: String, body: Option<&str>) -> CheckKind {
        CheckKind::Http {
            url,
            expect_status: 200..=399,
            body: body.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn http_checks_status_and_body() {
        let client = reqwest::Client::new();
        let ok = http_server("200 OK", "all good").await;
        assert!(
            probe(0, &check(http(ok.clone(), Some("good")), 1000), &client)
                .await
                .passed
        );
        let missing = probe(0, &check(http(ok, Some("bad")), 1000), &client).await;
        assert!(
            !missing.passed && missing.detail.contains("lacks"),
            "{missing:?}"
        );
        let failing = http_server("503 Service Unavailable", "").await;
        let r = probe(0, &check(http(failing, None), 1000), &client).await;
        assert!(!r.passed && r.detail.contains("503"), "{r:?}");
    }

    #[tokio::test]
    async fn tcp_and_exec_checks_pass_and_fail() {
        let client = reqwest::Client::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert!(
            probe(0, &check(CheckKind::Tcp { address: open }, 1000), &client)
                .await
                .passed
        );
        drop(listener);
        let (_refusing, closed) = crate::test_support::refusing_port();
        let closed = closed.to_string();
        assert!(
            !probe(0, &check(CheckKind::Tcp { address: closed }, 1000), &client)
                .await
                .passed
        );
        let exec = |argv: &[&str]| CheckKind::Exec {
            command: argv.iter().map(|s| s.to_string()).collect(),
        };
        assert!(
            probe(0, &check(exec(&["/bin/true"]), 1000), &client)
                .await
                .passed
        );
        let r = probe(0, &check(exec(&["/bin/sh", "-c", "exit 3"]), 1000), &client).await;
        assert_eq!((r.passed, r.detail.as_str()), (false, "exit 3"));
    }

    #[tokio::test]
    async fn a_hanging_probe_fails_at_its_timeout() {
        let client = reqwest::Client::new();
        let hang = CheckKind::Exec {
            command: vec!["/bin/sleep".into(), "30".into()],
        };
        let started = Instant::now();
        let r = probe(0, &check(hang, 200), &client).await;
        assert!(!r.passed && r.detail.contains("no answer"), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
