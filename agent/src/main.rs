//! The `ha-agent` command: `run`, `status`, `check-config`.
//!
//! Exit codes: 0 success; 1 the agent failed at run time; 2 the configuration is invalid (or
//! the command line is); 3 `status` found no running agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ha_agent::cli::{self, Command, Invocation};
use ha_agent::config::{self, Settings};
use ha_agent::{daemon, logging, status};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;

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
    }
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
    let socket = match socket {
        Some(socket) => socket,
        None => match config::status_socket_from_file(config_path) {
            Ok(socket) => socket,
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
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
