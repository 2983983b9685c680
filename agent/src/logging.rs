//! Logging: `tracing` events with fields, written as readable lines on stderr; raft's own
//! `slog` output is forwarded into the same stream under the target `raft`.

use std::fmt::Write as _;

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber. `RUST_LOG` overrides the default level (`info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}

/// A slog logger whose records become tracing events.
/// raft adds the node id (`raft_id`) to its own records.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(SlogToTracing, slog::o!())
}

struct SlogToTracing;

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let _ = slog::KV::serialize(values, record, &mut fields);
        let message = record.msg();
        let fields = fields.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{message}{fields}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}{fields}"),
            slog::Level::Info => tracing::info!(target: "raft", "{message}{fields}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{message}{fields}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{message}{fields}"),
        }
        Ok(())
    }
}

struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
