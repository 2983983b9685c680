//! The `ha-agent` command: `run`, `status`, `check-config`, `switchover`, `maintenance`.
//!
//! Exit codes: 0 success; 1 the agent failed at run time; 2 the configuration is invalid (or
//! the command line is); 3 `status` found no running agent; 4 an operator command was refused
//! or did not take effect in time.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ha_agent::cli::{self, Command, Invocation};
use ha_agent::config::{self, Settings};
use ha_agent::{daemon, logging, status};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_REFUSED: u8 = 4;

fn main() -> ExitCode {
    let command = match cli::parse() {
        Invocation::Command(command) => command,
        Invocation::GenerateAssets(dir) => return generate_assets(&dir),
    };
    match command {
        Command::CheckConfig(args) => check_config(&args.config),
        Command::Run(args) => run(&args.config),
        Command::Status {
            config,
            socket,
            json,
        } => show_status(&config.config, socket, json),
        Command::Switchover { config, socket, to } => {
            operator(&config.config, socket, status::Request::Switchover { to })
        }
        Command::Maintenance {
            config,
            socket,
            state,
        } => operator(
            &config.config,
            socket,
            status::Request::Maintenance { on: state == "on" },
        ),
    }
}

fn socket_path(
    config_path: &std::path::Path,
    socket: Option<PathBuf>,
) -> Result<PathBuf, ExitCode> {
    match socket {
        Some(socket) => Ok(socket),
        None => config::status_socket_from_file(config_path).map_err(|errors| {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// What every client command needs: the status socket's path and a small runtime.
fn client(
    config_path: &std::path::Path,
    socket: Option<PathBuf>,
) -> Result<(PathBuf, tokio::runtime::Runtime), ExitCode> {
    Ok((socket_path(config_path, socket)?, client_runtime()?))
}

/// The small runtime the client commands use.
fn client_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })
}

/// Sends an operator command, then waits (bounded) until its effect shows in the status.
fn operator(
    config_path: &std::path::Path,
    socket: Option<PathBuf>,
    request: status::Request,
) -> ExitCode {
    let (socket, runtime) = match client(config_path, socket) {
        Ok(client) => client,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let before = match status::query(&socket).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_NOT_RUNNING);
            }
        };
        if let Err(e) = status::command(&socket, &request).await {
            eprintln!("error: refused: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(now) = status::query(&socket).await {
                let done = match &request {
                    status::Request::Maintenance { on } => now.maintenance == *on,
                    status::Request::Switchover { to: Some(id) } => now.leader_id == Some(*id),
                    status::Request::Switchover { to: None } => {
                        now.leader_id.is_some() && now.leader_id != before.leader_id
                    }
                    status::Request::Status => true,
                };
                if done {
                    match &request {
                        status::Request::Maintenance { on } => println!(
                            "maintenance is {} for the whole group",
                            if *on { "on: nothing moves" } else { "off" }
                        ),
                        _ => println!(
                            "node {} now leads (term {})",
                            now.leader_id.unwrap_or_default(),
                            now.term
                        ),
                    }
                    return ExitCode::SUCCESS;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "error: the command was accepted but did not take effect within 10 s; \
                     see the leader's log (journalctl -u ha-agent)"
                );
                return ExitCode::from(EXIT_REFUSED);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Settings::load(path) {
        Ok(settings) => {
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("ok");
            print!("{}", settings.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    logging::init();
    let settings = match Settings::load(path) {
        Ok(settings) => settings,
        Err(errors) => {
            tracing::error!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::set_node(&settings.cluster.name, settings.node.id);
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime
                .block_on(daemon::run(settings))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn show_status(config_path: &std::path::Path, socket: Option<PathBuf>, json: bool) -> ExitCode {
    let (socket, runtime) = match client(config_path, socket) {
        Ok(client) => client,
        Err(code) => return code,
    };
    match runtime.block_on(status::query(&socket)) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("status reports serialise")
                );
            } else {
                print!("{}", status::render_human(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_NOT_RUNNING)
        }
    }
}

fn generate_assets(dir: &std::path::Path) -> ExitCode {
    match cli::generate_assets(dir) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write the assets into {}: {e}", dir.display());
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
