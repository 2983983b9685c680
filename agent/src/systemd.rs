//! Talking to systemd: readiness, status lines, stopping, and the watchdog (`sd_notify(3)`).
//!
//! The unit is `Type=notify` with `WatchdogSec=`: systemd considers the service started only
//! when [`Notifier::ready`] has been sent, and kills and restarts it when `WATCHDOG=1` stops
//! arriving. The daemon calls [`Notifier::watchdog`] from every turn of its Raft loop, so a
//! wedged loop (a deadlock, a blocking call that never returns, a stopped process) stops
//! feeding the watchdog and gets restarted: a half-dead agent must not keep the floating
//! resources. Feeding the watchdog from a separate timer task would defeat that.
//!
//! Outside systemd (no `NOTIFY_SOCKET` in the environment) the notifier is inert: every call
//! does nothing, so the same daemon runs from a shell or a test harness. A failure to send is
//! logged once and otherwise ignored: losing a notification must never stop the agent.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::warn;

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// Where systemd listens (`NOTIFY_SOCKET`); `None` outside systemd.
    socket: Option<OsString>,
    /// How often to send `WATCHDOG=1`: a third of `WatchdogSec=`, so that two notifications may
    /// be lost or late before systemd gives up on the process. `None` without a watchdog.
    watchdog_every: Option<Duration>,
    last_watchdog: Option<Instant>,
    /// Set after the first failed send, which is logged; later ones are not.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for the environment systemd gave this process: `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC`/`WATCHDOG_PID` (read by [`sd_notify::watchdog_enabled`]). Inert when
    /// the process was not started by systemd as a notify service.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        Notifier::new(socket, watchdog)
    }

    /// A notifier that never sends anything.
    pub fn inert() -> Notifier {
        Notifier::new(None, None)
    }

    fn new(socket: Option<OsString>, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            watchdog_every: watchdog.filter(|_| socket.is_some()).map(|d| d / 3),
            socket,
            last_watchdog: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether this notifier talks to a service manager at all.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// The interval at which [`Notifier::watchdog`] sends, if systemd asked for a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// `READY=1`: the state is loaded and the sockets are bound; systemd now reports the
    /// service as started. Send it once.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `STATUS=line`: the one-line state `systemctl status` shows, e.g. "leader, term 5".
    /// Line breaks would end the field, so they become spaces.
    pub fn status(&self, line: &str) {
        let line = one_line(line);
        self.send(&[NotifyState::Status(&line)]);
    }

    /// `STOPPING=1`: the agent is shutting down (handing leadership away first).
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// `WATCHDOG=1`, at most once per [`Notifier::watchdog_interval`]; call it on every turn
    /// of the Raft loop with the current time. Does nothing without a watchdog.
    pub fn watchdog(&mut self, now: Instant) {
        if self.watchdog_due(now) {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// Whether a `WATCHDOG=1` is due at `now`; if so, records `now` as the last one.
    fn watchdog_due(&mut self, now: Instant) -> bool {
        let Some(every) = self.watchdog_every else {
            return false;
        };
        let due = self
            .last_watchdog
            .is_none_or(|last| now.saturating_duration_since(last) >= every);
        if due {
            self.last_watchdog = Some(now);
        }
        due
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send_to(socket, states) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    socket = %socket.to_string_lossy(),
                    error = %e,
                    "cannot notify systemd (NOTIFY_SOCKET); further failures are not logged"
                );
            }
        }
    }
}

/// Sends one datagram of `KEY=value` lines, as `sd_notify(3)` does. A socket name starting
/// with `@` is in the abstract namespace.
fn send_to(socket: &OsString, states: &[NotifyState<'_>]) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sent = UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to the notify socket",
        ));
    }
    Ok(())
}

fn one_line(line: &str) -> String {
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A datagram socket standing in for systemd's notify socket.
    struct FakeManager {
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl FakeManager {
        fn new() -> FakeManager {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ha-agent-notify-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).expect("bind a notify socket");
            socket.set_nonblocking(true).expect("nonblocking");
            FakeManager { socket, path }
        }

        fn notifier(&self, watchdog: Option<Duration>) -> Notifier {
            Notifier::new(Some(self.path.clone().into_os_string()), watchdog)
        }

        /// Every datagram received so far.
        fn received(&self) -> Vec<String> {
            let mut messages = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.socket.recv(&mut buf) {
                messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            messages
        }
    }

    impl Drop for FakeManager {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn sends_ready_status_and_stopping_as_sd_notify_lines() {
        let manager = FakeManager::new();
        let notifier = manager.notifier(None);
        assert!(notifier.is_active());
        notifier.ready();
        notifier.status("follower of node 2, term 5");
        notifier.status("two\nlines");
        notifier.stopping();
        assert_eq!(
            manager.received(),
            [
                "READY=1\n",
                "STATUS=follower of node 2, term 5\n",
                "STATUS=two lines\n",
                "STOPPING=1\nSTATUS=stopping\n",
            ]
        );
    }

    #[test]
    fn watchdog_is_sent_at_most_every_third_of_watchdog_sec() {
        let manager = FakeManager::new();
        let mut notifier = manager.notifier(Some(Duration::from_secs(6)));
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(2)));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Ticks every 100 ms for 5 s: sent at 0, 2.0 s and 4.0 s only.
        for ms in (0..5000).step_by(100) {
            notifier.watchdog(at(ms));
        }
        assert_eq!(manager.received(), ["WATCHDOG=1\n"; 3]);
    }

    #[test]
    fn watchdog_counts_from_the_last_notification_sent() {
        let mut notifier = Notifier::new(Some("/nonexistent".into()), Some(Duration::from_secs(3)));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(notifier.watchdog_due(at(0)));
        assert!(!notifier.watchdog_due(at(999)));
        // A loop that stalled for a while sends at once when it runs again...
        assert!(notifier.watchdog_due(at(2500)));
        // ...and the next one is due a full interval after that.
        assert!(!notifier.watchdog_due(at(3000)));
        assert!(notifier.watchdog_due(at(3500)));
        // A clock reading from before the last one never sends.
        assert!(!notifier.watchdog_due(at(100)));
    }

    #[test]
    fn without_a_watchdog_nothing_is_sent() {
        let manager = FakeManager::new();
        let mut notifier = manager.notifier(None);
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.watchdog(Instant::now());
        assert!(manager.received().is_empty());
    }

    #[test]
    fn inert_outside_systemd() {
        let mut notifier = Notifier::new(None, Some(Duration::from_secs(5)));
        assert!(!notifier.is_active());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
        notifier.status("leader, term 1");
        notifier.watchdog(Instant::now());
        notifier.stopping();
        assert!(!notifier.warned.load(Ordering::Relaxed));
        let notifier = Notifier::inert();
        notifier.ready();
        assert!(!notifier.is_active());
    }

    #[test]
    fn an_unreachable_socket_is_reported_once_and_never_fails_the_caller() {
        let mut notifier = Notifier::new(
            Some("/nonexistent/ha-agent/notify.sock".into()),
            Some(Duration::from_secs(3)),
        );
        notifier.ready();
        assert!(notifier.warned.load(Ordering::Relaxed));
        notifier.status("still running");
        notifier.watchdog(Instant::now());
    }

    #[test]
    fn abstract_socket_names_are_supported() {
        let name = format!("ha-agent-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract");
        receiver.set_nonblocking(true).expect("nonblocking");
        let notifier = Notifier::new(Some(format!("@{name}").into()), None);
        notifier.ready();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
