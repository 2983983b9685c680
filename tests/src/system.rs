//! What the harness needs from the machine: root, the helper programs, the `ha-agent` binary.

use std::env;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Fails unless the process runs as root: network namespaces, veth pairs and nftables need it.
/// The end-to-end tests fail (they do not skip) when this fails.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the end-to-end harness must run as root (it creates network namespaces, veth pairs, \
             a bridge and nftables rules); run `bash scripts/test` as root"
        );
    }
    Ok(())
}

/// Fails unless `program` is on `PATH`, naming the script that installs it.
pub(crate) fn require_tool(program: &str) -> Result<()> {
    let found = env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("`{program}` is not installed: run `bash scripts/setup` (as root) first");
    }
    Ok(())
}

/// The `ha-agent` binary under test: `$HA_AGENT_BIN` if set, else the `ha-agent` in the same
/// target profile directory as the running executable (`<target>/<profile>/deps/e2e-HASH` for
/// the test binary, `<target>/<profile>/ha-agent-demo` for the demo).
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = env::var_os("HA_AGENT_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "HA_AGENT_BIN is set to {}, which is not a file",
                path.display()
            );
        }
        return path
            .canonicalize()
            .with_context(|| format!("cannot resolve HA_AGENT_BIN={}", path.display()));
    }
    let executable = env::current_exe().context("cannot find the running executable")?;
    let mut profile_dir = executable
        .parent()
        .context("the running executable has no parent directory")?;
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let candidate = profile_dir.join("ha-agent");
    if !candidate.is_file() {
        bail!(
            "the ha-agent binary is not at {}: build it first with `cargo build -p ha-agent` \
             (same profile and CARGO_TARGET_DIR as the tests), or set HA_AGENT_BIN to its path",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Prints one line of measurements straight to the process's stderr, past the test runner's
/// output capture, so that timings appear in CI logs of passing tests too.
pub fn report(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "e2e: {line}");
}

/// The last `max_lines` lines of a text file (at most its last 16 KiB), for failure messages.
pub(crate) fn tail(path: &Path, max_lines: usize) -> String {
    const MAX_BYTES: usize = 16 * 1024;
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => return format!("(cannot read {}: {error})", path.display()),
    };
    let start = bytes.len().saturating_sub(MAX_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(max_lines);
    if lines.is_empty() {
        return "(empty)".to_string();
    }
    lines[first..].join("\n")
}
