//! Collecting what a command run by `exec_sync` writes, within bounds: the runtimes run it as
//! a child process (the command itself, or `runc exec`) and answer when it ends. Its output
//! is held in memory until then, so it is capped: a `kubectl exec` of a huge file fails with
//! a message instead of growing the node agent without limit.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use bytes::Bytes;
use kube_core::runtime::{ExecResult, RuntimeError};
use tokio::io::AsyncReadExt as _;

/// The most output (stdout and stderr together) an exec may produce.
pub(crate) const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

/// Waits for `child` (spawned with piped stdout and stderr) for at most `timeout`, collecting
/// at most `limit` bytes of output; past either, the child is killed and the exec fails.
pub(crate) async fn collect(
    mut child: tokio::process::Child,
    timeout: Duration,
    limit: usize,
    kill_group: impl FnOnce(&tokio::process::Child),
) -> Result<ExecResult, RuntimeError> {
    let failed = |message: String| RuntimeError::Failed {
        operation: "exec_sync",
        message,
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(failed("the command's output is not piped".into()));
    };
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut out_done, mut err_done) = (false, false);
        let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
        // Both streams at once (a command blocked writing one must not stall the other), with
        // one budget for both; `read` loses nothing when the other branch wins.
        while !(out_done && err_done) {
            tokio::select! {
                n = stdout.read(&mut out_buf), if !out_done => match n? {
                    0 => out_done = true,
                    n => out.extend_from_slice(&out_buf[..n]),
                },
                n = stderr.read(&mut err_buf), if !err_done => match n? {
                    0 => err_done = true,
                    n => err.extend_from_slice(&err_buf[..n]),
                },
            }
            if out.len() + err.len() > limit {
                return Ok(None);
            }
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(Some((out, err, status)))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Some((stdout, stderr, status)))) => {
            let stdout_len = stdout.len();
            let mut output = stdout;
            output.extend_from_slice(&stderr);
            Ok(ExecResult {
                exit_code: status
                    .code()
                    .or(status.signal().map(|s| 128 + s))
                    .unwrap_or(-1),
                output: Bytes::from(output),
                stdout_len: Some(stdout_len),
            })
        }
        Ok(Ok(None)) => {
            kill_group(&child);
            let _ = child.start_kill();
            Err(failed(format!(
                "the command's output exceeds {} MiB; it was stopped",
                limit >> 20
            )))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            kill_group(&child);
            let _ = child.start_kill();
            Err(failed(format!("timed out after {timeout:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    fn sh(script: &str) -> tokio::process::Child {
        tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sh")
    }

    #[tokio::test]
    async fn output_exit_code_and_where_stdout_ends() {
        let result = collect(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
            1024,
            |_| {},
        )
        .await
        .expect("ran");
        assert_eq!(result.exit_code, 3);
        assert_eq!(&result.output[..], b"out\nerr\n");
        assert_eq!(result.stdout_len, Some(4));
    }

    #[tokio::test]
    async fn too_much_output_stops_the_command() {
        let error = collect(
            sh("head -c 100000 /dev/zero; sleep 30"),
            Duration::from_secs(10),
            4096,
            |_| {},
        )
        .await
        .expect_err("over the limit");
        assert!(error.to_string().contains("exceeds"), "{error}");
    }

    #[tokio::test]
    async fn a_command_past_its_time_is_stopped() {
        let started = std::time::Instant::now();
        let error = collect(sh("sleep 30"), Duration::from_millis(200), 1024, |_| {})
            .await
            .expect_err("timed out");
        assert!(error.to_string().contains("timed out"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
