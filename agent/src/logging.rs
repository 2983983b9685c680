//! Logging: `tracing` events with fields, and raft's own `slog` records, in one place.
//!
//! - Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`), each event goes to
//!   journald through `systemd-journal-logger` as one entry whose fields are the event's
//!   fields: `node = 2` becomes `NODE=2`, `peer` becomes `PEER`, and so on, next to
//!   `MESSAGE`, `PRIORITY`, `TARGET` and `CODE_FILE`/`CODE_LINE`. `journalctl -o verbose` shows
//!   them and `journalctl -u ha-agent PEER=3` filters by them. `MESSAGE` repeats the fields as
//!   `key=value` so that the default `journalctl` view stays readable.
//! - Elsewhere, readable lines on stderr.
//! - When the journal socket is unusable (a container without journald, journald restarting),
//!   lines go to stderr instead, which systemd still collects.
//!
//! raft's records (target `raft`) take the same path: [`raft_logger`] turns each one into a
//! tracing event, filtered like the others; on stderr its key-values follow the message, and
//! under the journal they become journal fields too (`raft_id` under the name `NODE`, like the
//! agent's own records).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

/// The field that carries raft's structured key-values through tracing (see [`raft_logger`]).
const RAFT_FIELDS: &str = "raft_fields";
/// The field that carries the file, line and module of a raft record, separated by
/// [`PAIR_SEPARATOR`].
const RAFT_CODE: &str = "raft_code";
/// Separates `key=value` pairs inside [`RAFT_FIELDS`]; a byte that never appears in raft's
/// keys or in the numbers and short words of its values.
const PAIR_SEPARATOR: char = '\u{1f}';

/// Whether [`init`] installed the journal layer.
static JOURNAL: AtomicBool = AtomicBool::new(false);
/// Fields added to every journal entry that does not carry its own (see [`set_node`]).
static CONTEXT: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Installs the global subscriber: the journal under systemd, stderr otherwise. `RUST_LOG`
/// overrides the default level (`info`). Safe to call more than once; only the first counts.
pub fn init() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut journal_error = None;
    let journal = if systemd_journal_logger::connected_to_journal() {
        match JournalLog::empty() {
            Ok(log) => Some(JournalLayer {
                log: log.with_syslog_identifier("ha-agent".to_string()),
            }),
            Err(e) => {
                journal_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let installed = if let Some(journal) = journal {
        let installed = tracing_subscriber::registry()
            .with(journal.with_filter(filter()))
            .try_init();
        JOURNAL.store(installed.is_ok(), Ordering::Relaxed);
        installed
    } else {
        // Under systemd without a usable journal socket, journald still reads stderr and adds
        // its own timestamps.
        let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(true);
        if under_systemd {
            tracing_subscriber::registry()
                .with(stderr.without_time().with_filter(filter()))
                .try_init()
        } else {
            tracing_subscriber::registry()
                .with(stderr.with_filter(filter()))
                .try_init()
        }
    };
    if let (Ok(()), Some(e)) = (installed, journal_error) {
        tracing::warn!(error = %e, "cannot use the journal socket; logging to stderr instead");
    }
}

/// Adds `CLUSTER=` and `NODE=` to every journal entry that does not name its own, once the
/// configuration is known. Only the first call counts.
pub fn set_node(cluster: &str, node: u64) {
    let _ = CONTEXT.set(vec![
        ("cluster".to_string(), cluster.to_string()),
        ("node".to_string(), node.to_string()),
    ]);
}

/// A slog logger whose records become tracing events under the target `raft`.
/// raft adds the node id (`raft_id`) to its own records.
pub fn raft_logger() -> slog::Logger {
    let structured = JOURNAL.load(Ordering::Relaxed);
    slog::Logger::root(SlogToTracing { structured }, slog::o!())
}

/// Sends each tracing event to journald as one entry with structured fields.
struct JournalLayer {
    log: JournalLog,
}

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Collector::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Collector::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(existing) => existing.0.extend(fields.fields),
            None => extensions.insert(SpanFields(fields.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut collector = Collector::default();
        event.record(&mut collector);
        let mut entry = JournalEntry::from_event(event.metadata(), collector);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    entry.add_context(fields);
                }
            }
        }
        if let Some(context) = CONTEXT.get() {
            entry.add_context(context);
        }
        entry.send(&self.log);
    }
}

/// The fields recorded on a span, added to the events inside it.
struct SpanFields(Vec<(String, String)>);

/// One journal entry in the making.
#[derive(Debug, PartialEq, Eq)]
struct JournalEntry {
    level: log::Level,
    target: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    /// The message as read in `journalctl`: the text, then the event's own fields as
    /// ` key=value`.
    message: String,
    /// The fields journald stores; their names are upper-cased (and made valid) by
    /// systemd-journal-logger.
    fields: Vec<(String, String)>,
}

impl JournalEntry {
    fn from_event(metadata: &'static tracing::Metadata<'static>, collected: Collector) -> Self {
        let mut entry = JournalEntry {
            level: log_level(*metadata.level()),
            target: metadata.target().to_string(),
            module_path: metadata.module_path().map(str::to_string),
            file: metadata.file().map(str::to_string),
            line: metadata.line(),
            message: collected.message.unwrap_or_default(),
            fields: Vec::new(),
        };
        for (key, value) in collected.fields {
            if key == RAFT_FIELDS {
                // raft's key-values, flattened by SlogToTracing: fields of their own here.
                for pair in value.split(PAIR_SEPARATOR).filter(|p| !p.is_empty()) {
                    if let Some((key, value)) = pair.split_once('=') {
                        entry.push_field(raft_key(key), value.to_string());
                    }
                }
            } else if key == RAFT_CODE {
                // Where in raft the record was made, rather than the drain's own location.
                let mut parts = value.split(PAIR_SEPARATOR);
                if let (Some(file), Some(line), Some(module)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    entry.file = Some(file.to_string());
                    entry.line = line.parse().ok();
                    entry.module_path = Some(module.to_string());
                }
            } else {
                entry.push_field(key, value);
            }
        }
        entry
    }

    fn push_field(&mut self, key: String, value: String) {
        let _ = write!(self.message, " {key}={value}");
        self.fields.push((key, value));
    }

    /// Adds span or process context that the event does not override.
    fn add_context(&mut self, context: &[(String, String)]) {
        for (key, value) in context {
            if !self.fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
                self.fields.push((key.clone(), value.clone()));
            }
        }
    }

    /// Sends the entry; when journald cannot take it, writes it to stderr instead.
    fn send(&self, log: &JournalLog) {
        let sent = log.journal_send(
            &log::Record::builder()
                .level(self.level)
                .target(&self.target)
                .module_path(self.module_path.as_deref())
                .file(self.file.as_deref())
                .line(self.line)
                .key_values(&self.fields)
                .args(format_args!("{}", self.message))
                .build(),
        );
        if sent.is_err() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{:>5} {}: {}",
                self.level,
                self.target,
                self.message
            );
        }
    }
}

fn log_level(level: Level) -> log::Level {
    match level {
        Level::ERROR => log::Level::Error,
        Level::WARN => log::Level::Warn,
        Level::INFO => log::Level::Info,
        Level::DEBUG => log::Level::Debug,
        Level::TRACE => log::Level::Trace,
    }
}

/// raft names the node `raft_id`; the agent's records call it `node`.
fn raft_key(key: &str) -> String {
    match key {
        "raft_id" => "node".to_string(),
        other => other.to_string(),
    }
}

/// Collects an event's message and fields as text.
#[derive(Default)]
struct Collector {
    message: Option<String>,
    fields: Vec<(String, String)>,
}

impl Collector {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.fields.push((field.name().to_string(), value));
        }
    }
}

impl Visit for Collector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string());
    }
}

/// Forwards raft's slog records to tracing. With `structured`, the key-values travel in the
/// `raft_fields` field and raft's code location in `raft_code`, for the journal layer;
/// otherwise the key-values are appended to the message, as the stderr format shows them.
struct SlogToTracing {
    structured: bool,
}

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut fields = SlogFields::default();
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let _ = slog::KV::serialize(values, record, &mut fields);
        let message = record.msg();
        let text = fields.text;
        let raft_fields = fields.pairs.as_str();
        let raft_code = if self.structured {
            let (file, line, module) = (record.file(), record.line(), record.module());
            format!("{file}{PAIR_SEPARATOR}{line}{PAIR_SEPARATOR}{module}")
        } else {
            String::new()
        };
        let raft_code = raft_code.as_str();
        macro_rules! forward {
            ($level:expr) => {
                if self.structured {
                    tracing::event!(target: "raft", $level, raft_fields, raft_code, "{message}")
                } else {
                    tracing::event!(target: "raft", $level, "{message}{text}")
                }
            };
        }
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(Level::ERROR),
            slog::Level::Warning => forward!(Level::WARN),
            slog::Level::Info => forward!(Level::INFO),
            slog::Level::Debug => forward!(Level::DEBUG),
            slog::Level::Trace => forward!(Level::TRACE),
        }
        Ok(())
    }
}

/// raft's key-values, both as readable text and as separator-joined pairs.
#[derive(Default)]
struct SlogFields {
    text: String,
    pairs: String,
}

impl slog::Serializer for SlogFields {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.text, " {key}={value}");
        let value = value.to_string().replace(PAIR_SEPARATOR, " ");
        let _ = write!(self.pairs, "{key}={value}{PAIR_SEPARATOR}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the journal entries a layer would send.
    #[derive(Clone, Default)]
    struct Entries(Arc<Mutex<Vec<JournalEntry>>>);

    impl<S: Subscriber> Layer<S> for Entries {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut collector = Collector::default();
            event.record(&mut collector);
            let entry = JournalEntry::from_event(event.metadata(), collector);
            self.0.lock().unwrap().push(entry);
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<JournalEntry> {
        let entries = Entries::default();
        let subscriber = tracing_subscriber::registry().with(entries.clone());
        tracing::subscriber::with_default(subscriber, f);
        let entries = entries.0.lock().unwrap();
        entries
            .iter()
            .map(|e| JournalEntry {
                level: e.level,
                target: e.target.clone(),
                module_path: e.module_path.clone(),
                file: e.file.clone(),
                line: e.line,
                message: e.message.clone(),
                fields: e.fields.clone(),
            })
            .collect()
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn event_fields_become_journal_fields_and_stay_in_the_message() {
        let entries = capture(|| {
            let reason = "connection refused";
            tracing::warn!(peer = 3, address = %"10.0.1.12:7946", %reason, "peer unreachable");
            tracing::info!(node = 1u64, term = 5u64, resource = "eip", "claimed");
        });
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].level, log::Level::Warn);
        assert_eq!(entries[0].target, module_path!());
        assert_eq!(
            entries[0].message,
            "peer unreachable peer=3 address=10.0.1.12:7946 reason=connection refused"
        );
        assert_eq!(
            entries[0].fields,
            pairs(&[
                ("peer", "3"),
                ("address", "10.0.1.12:7946"),
                ("reason", "connection refused")
            ])
        );
        assert_eq!(
            entries[1].fields,
            pairs(&[("node", "1"), ("term", "5"), ("resource", "eip")])
        );
        assert!(entries[0].file.is_some() && entries[0].line.is_some());
    }

    #[test]
    fn raft_records_become_events_with_their_key_values_as_fields() {
        let entries = capture(|| {
            let drain = SlogToTracing { structured: true };
            let logger = slog::Logger::root(drain, slog::o!("raft_id" => 2u64));
            slog::info!(logger, "became leader at term 7"; "term" => 7u64);
            slog::debug!(logger, "sent vote"; "to" => 3u64, "msg" => "a=b c");
        });
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].target, "raft");
        assert_eq!(entries[0].level, log::Level::Info);
        assert_eq!(entries[0].fields, pairs(&[("term", "7"), ("node", "2")]));
        // The location is raft's call site (here, this test), not the drain in this module's
        // non-test code.
        assert_eq!(entries[0].file.as_deref(), Some(file!()));
        assert!(entries[0]
            .module_path
            .as_deref()
            .unwrap()
            .ends_with("logging::tests"));
        assert_eq!(entries[0].message, "became leader at term 7 term=7 node=2");
        assert_eq!(entries[1].level, log::Level::Debug);
        assert_eq!(
            entries[1].fields,
            pairs(&[("msg", "a=b c"), ("to", "3"), ("node", "2")])
        );
    }

    #[test]
    fn raft_records_on_stderr_carry_their_key_values_in_the_message() {
        let entries = capture(|| {
            let drain = SlogToTracing { structured: false };
            let logger = slog::Logger::root(drain, slog::o!("raft_id" => 2u64));
            slog::warn!(logger, "lost quorum"; "term" => 9u64);
        });
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].level, log::Level::Warn);
        assert_eq!(entries[0].message, "lost quorum term=9 raft_id=2");
        assert!(entries[0].fields.is_empty());
    }

    #[test]
    fn context_fills_in_only_missing_fields() {
        let mut entry = JournalEntry {
            level: log::Level::Info,
            target: "t".into(),
            module_path: None,
            file: None,
            line: None,
            message: "m".into(),
            fields: pairs(&[("node", "7")]),
        };
        entry.add_context(&pairs(&[("cluster", "web"), ("NODE", "1")]));
        assert_eq!(entry.fields, pairs(&[("node", "7"), ("cluster", "web")]));
        assert_eq!(entry.message, "m");
    }

    #[test]
    fn raft_pairs_survive_the_separator_in_values() {
        let mut fields = SlogFields::default();
        let key: slog::Key = "k";
        slog::Serializer::emit_arguments(&mut fields, key, &format_args!("x\u{1f}y")).unwrap();
        assert_eq!(fields.pairs, "k=x y\u{1f}");
    }
}
