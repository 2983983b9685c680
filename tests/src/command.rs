//! Running helper programs (`ip`, `nft`, `ping`, `ha-agent status`) with a time limit.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a plumbing command (`ip`, `nft`) may take before the harness gives up on it.
pub(crate) const PLUMBING_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `program arg1 arg2 …`, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` to completion, feeding it `stdin`, and kills it if it is still running after
/// `timeout`. A non-zero exit is not an error here; see [`run_checked`].
pub(crate) fn run(
    command: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<CommandOutput> {
    let description = describe(command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{description}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe at the end of this block closes the child's stdin.
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("cannot write the input of `{description}`"))?;
    }
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = match wait_with_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{description}` did not finish within {} ms and was killed",
                timeout.as_millis()
            );
        }
    };
    Ok(CommandOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Like [`run`], but a non-zero exit is an error that quotes the command's stderr.
pub(crate) fn run_checked(
    command: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let description = describe(command);
    let output = run(command, stdin, timeout)?;
    if !output.status.success() {
        bail!(
            "`{description}` failed ({}): {}",
            output.status,
            output.stderr.trim()
        );
    }
    Ok(output.stdout)
}

/// Runs a plumbing program such as `ip` with [`PLUMBING_TIMEOUT`]; non-zero exit is an error.
pub(crate) fn plumbing<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_checked(Command::new(program).args(args), None, PLUMBING_TIMEOUT)
}

/// Waits for `child` to exit, for at most `timeout`. `None` if it is still running.
pub(crate) fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    // Short sleeps first, so that a fast command costs little; at most 10 ms later on.
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child
            .try_wait()
            .context("cannot wait for a child process")?
        {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
