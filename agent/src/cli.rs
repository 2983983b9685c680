//! The command line of `ha-agent`, and the assets generated from it: the man page
//! `ha-agent(8)` and the bash, zsh and fish completions that the packages install.
//!
//! `main.rs` parses and dispatches; the definition lives here so that
//! `ha-agent generate-assets DIR` (hidden; run by `scripts/package`) can render it.
//! [`parse`] reads the process's arguments, hidden command included.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches as _, Parser, Subcommand};
use clap_complete::Shell;

use crate::config;

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(
    name = "ha-agent",
    version,
    about = "Failover agent for AWS EC2: a Raft group keeps one healthy leader",
    long_about = "Failover agent for AWS EC2. The agents on the primary, the standbys and an \
                  optional witness form a Raft group, elect one leader while a majority is alive, \
                  and keep the group's floating resources pointed at it. systemd runs `ha-agent \
                  run` as the service ha-agent.service; administrators use `ha-agent status` and \
                  `ha-agent check-config`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (as systemd does).
    Run(ConfigArg),
    /// Show where this node stands: role, term, leader, peers.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Talk to this status socket instead of the one named in the configuration.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print a summary.
    CheckConfig(ConfigArg),
    /// Hand leadership (and the floating resources) to a healthy peer: the best one, or --to ID.
    Switchover {
        #[command(flatten)]
        config: ConfigArg,
        /// Talk to this status socket instead of the one named in the configuration.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The member id that should lead.
        #[arg(long, value_name = "ID")]
        to: Option<u64>,
    },
    /// Turn maintenance mode on or off for the whole group: while on, nothing moves.
    Maintenance {
        #[command(flatten)]
        config: ConfigArg,
        /// Talk to this status socket instead of the one named in the configuration.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// `--config PATH`.
#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// One of the documented commands.
    Command(Command),
    /// `ha-agent generate-assets DIR`: write the man page and completions into DIR. Hidden, and
    /// kept out of [`Cli`] so that neither the man page nor the completions offer it.
    GenerateAssets(PathBuf),
}

const GENERATE_ASSETS: &str = "generate-assets";

/// Parses the process's arguments; exits with clap's message and code 2 on a usage error.
pub fn parse() -> Invocation {
    let matches = full_command().get_matches();
    if let Some((GENERATE_ASSETS, sub)) = matches.subcommand() {
        let dir = sub.get_one::<PathBuf>("dir").expect("DIR is required");
        return Invocation::GenerateAssets(dir.clone());
    }
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Invocation::Command(cli.command),
        Err(e) => e.exit(),
    }
}

/// [`Cli`] plus the hidden `generate-assets` command.
fn full_command() -> clap::Command {
    Cli::command().subcommand(
        clap::Command::new(GENERATE_ASSETS)
            .hide(true)
            .about("Write the man page and shell completions into DIR (used to build the packages)")
            .arg(
                clap::Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Directory to write ha-agent.8 and the completions into; created if missing"),
            ),
    )
}

/// The man page's name and section.
pub const MAN_PAGE: &str = "ha-agent.8";

/// The completion files, by shell, as named where the packages install them.
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "ha-agent.bash"),
    (Shell::Zsh, "_ha-agent"),
    (Shell::Fish, "ha-agent.fish"),
];

/// Writes [`MAN_PAGE`] and the [`COMPLETIONS`] into `dir`; returns the paths written.
pub fn generate_assets(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();

    let path = dir.join(MAN_PAGE);
    std::fs::write(&path, man_page()?)?;
    written.push(path);

    for (shell, name) in COMPLETIONS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "ha-agent", &mut script);
        let path = dir.join(name);
        std::fs::write(&path, script)?;
        written.push(path);
    }
    Ok(written)
}

/// `ha-agent(8)`: clap_mangen's page for the command, each visible subcommand with its
/// options, and the sections clap knows nothing about (files, exit status, see also).
pub fn man_page() -> io::Result<Vec<u8>> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("ha-agent {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;

    writeln!(page, ".SH COMMANDS")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut text = Vec::new();
        let sub_man =
            clap_mangen::Man::new(sub.clone().bin_name(format!("ha-agent {}", sub.get_name())));
        sub_man.render_synopsis_section(&mut text)?;
        sub_man.render_options_section(&mut text)?;
        let text = String::from_utf8_lossy(&text);
        writeln!(page, ".SS \"ha-agent {}\"", sub.get_name())?;
        if let Some(about) = sub.get_about() {
            writeln!(page, "{}", roff_escape(&about.to_string()))?;
        }
        // Demote the subcommand's own sections to paragraphs under its heading.
        for line in text.lines() {
            match line {
                ".SH SYNOPSIS" => writeln!(page, ".PP")?,
                ".SH OPTIONS" => writeln!(page, ".PP\nOptions:")?,
                line => writeln!(page, "{line}")?,
            }
        }
    }

    page.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

fn roff_escape(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

const EXTRA_SECTIONS: &str = r#".SH "RUNNING UNDER SYSTEMD"
The packages install \fBha\-agent.service\fR but leave it disabled, since it cannot start
without the site configuration. Edit \fI/etc/ha\-agent.toml\fR, create the cluster secret file,
then run \fBsystemctl enable \-\-now ha\-agent\fR. The service runs as the system user
\fBha\-agent\fR in a sandbox, reports readiness and feeds the systemd watchdog from its Raft
loop; systemd restarts it when it exits or hangs. Its logs are in the journal, with fields such
as \fBNODE\fR, \fBTERM\fR and \fBPEER\fR: \fBjournalctl \-u ha\-agent \-o verbose\fR.
Change unit settings with \fBsystemctl edit ha\-agent\fR, not by editing the unit file.
.SH FILES
.TP
\fI/etc/ha\-agent.toml\fR
The configuration (mode 0640, group \fBha\-agent\fR); check it with \fBha\-agent check\-config\fR.
.TP
\fI/etc/ha\-agent/cluster.key\fR
The key shared by all members (\fBcluster.secret\-file\fR, or an SSM SecureString named by
\fBcluster.secret\-ssm\-parameter\fR); it must not be readable by others.
.TP
\fI/var/lib/ha\-agent/\fR
The durable Raft state (\fBnode.state\-dir\fR).
.TP
\fI/run/ha\-agent/status.sock\fR
The status socket that \fBha\-agent status\fR reads (\fBstatus.socket\fR); root and members of
group \fBha\-agent\fR may use it.
.SH "EXIT STATUS"
.TP
0
Success.
.TP
1
The agent failed at run time.
.TP
2
The configuration (or the command line) is invalid.
.TP
3
\fBstatus\fR found no running agent, or may not talk to it.
.TP
4
\fBswitchover\fR or \fBmaintenance\fR was refused (the reason is printed), or did not take
effect within 10 seconds.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        full_command().debug_assert();
    }

    #[test]
    fn generate_assets_is_parsed_apart_from_the_documented_commands() {
        let matches = full_command()
            .try_get_matches_from(["ha-agent", "generate-assets", "/tmp/x"])
            .unwrap();
        let (name, sub) = matches.subcommand().unwrap();
        assert_eq!(name, GENERATE_ASSETS);
        assert_eq!(sub.get_one::<PathBuf>("dir").unwrap(), Path::new("/tmp/x"));
        let matches = full_command()
            .try_get_matches_from(["ha-agent", "status", "--json"])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        assert!(matches!(cli.command, Command::Status { json: true, .. }));
        assert!(Cli::try_parse_from(["ha-agent", "generate-assets", "/tmp/x"]).is_err());
    }

    #[test]
    fn the_man_page_documents_every_visible_command_and_option() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.starts_with(".ie"), "roff preamble: {}", &page[..40]);
        assert!(page.contains(".TH ha-agent 8"), "section 8 title");
        for expected in [
            ".SS \"ha-agent run\"",
            ".SS \"ha-agent status\"",
            ".SS \"ha-agent check-config\"",
            "\\-\\-json",
            "\\-\\-socket",
            "\\-\\-config",
            ".SH FILES",
            ".SH \"EXIT STATUS\"",
        ] {
            assert!(page.contains(expected), "man page lacks {expected:?}");
        }
        assert!(!page.contains("generate-assets") && !page.contains("generate\\-assets"));
    }

    #[test]
    fn assets_are_written_for_every_shell() {
        let dir = std::env::temp_dir().join(format!("ha-agent-assets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = generate_assets(&dir).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["ha-agent.8", "ha-agent.bash", "_ha-agent", "ha-agent.fish"]
        );
        let bash = std::fs::read_to_string(dir.join("ha-agent.bash")).unwrap();
        assert!(bash.contains("check-config") && bash.contains("--json"));
        let zsh = std::fs::read_to_string(dir.join("_ha-agent")).unwrap();
        let fish = std::fs::read_to_string(dir.join("ha-agent.fish")).unwrap();
        assert!(
            !bash.contains("generate-assets"),
            "hidden command completed"
        );
        assert!(zsh.starts_with("#compdef ha-agent"));
        assert!(fish.contains("complete -c ha-agent"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
