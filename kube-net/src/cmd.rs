//! Running the `ip` and `nft` helpers, optionally inside a named network namespace.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};

/// Runs `program args…` (inside `netns` through `ip netns exec` when given), feeding it `stdin`,
/// and returns its stdout; a non-zero exit is an [`Error::Command`] carrying stderr.
pub(crate) async fn run(
    netns: Option<&str>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut argv: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns]);
    }
    argv.push(program);
    argv.extend_from_slice(args);
    let command = argv.join(" ");
    let spawn_err = |source| Error::Spawn {
        command: command.clone(),
        source,
    };
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
        // Dropping the pipe closes it: the program sees end of input.
        drop(pipe);
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    if !output.status.success() {
        return Err(Error::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
