//! The `command` source: runs an argv (`rpicam-still -n -o -`, `fswebcam -`, an `ffmpeg` or `gst-launch`
//! pipeline) every interval and takes the image from its stdout. The child runs in a process group of its
//! own so that a timeout (or shutdown) kills the whole pipeline, not just the shell in front of it.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::capture::{rfc3339, Capture, CaptureData};
use crate::config::{CommandSource, Problem};
use crate::shutdown::Shutdown;
use crate::sources::{durations, every, SourceError, SourceStats, MAX_CAPTURE_BYTES};

/// How much of stderr is kept to explain a failure: its last line is what is reported.
const STDERR_TAIL: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// The configured source's name, also the site.
    pub source: String,
    pub argv: Vec<String>,
    pub interval: Duration,
    /// From start to exit, stdout fully read; then the process group is killed.
    pub timeout: Duration,
    /// Larger output is refused (and the command killed).
    pub max_bytes: u64,
}

impl CommandSettings {
    pub fn from_config(name: &str, config: &CommandSource) -> Result<CommandSettings, SourceError> {
        let mut problems = Vec::new();
        if config.command.first().is_none_or(|program| program.is_empty()) {
            let key = format!("sources.{name}.command");
            problems.push(Problem { key, message: "must name a program".into() });
        }
        let (interval, timeout) = durations(name, &config.interval, &config.timeout, &mut problems);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        Ok(CommandSettings {
            source: name.to_owned(),
            argv: config.command.clone(),
            interval,
            timeout,
            max_bytes: MAX_CAPTURE_BYTES,
        })
    }
}

/// Runs the command every interval until shutdown. Queue policy: see [`every`] (a full queue skips the
/// tick and counts it in `stats.skipped_ticks`).
pub async fn run(
    settings: CommandSettings,
    tx: mpsc::Sender<Capture>,
    stats: Arc<SourceStats>,
    shutdown: Shutdown,
) {
    tracing::info!(source = %settings.source, command = ?settings.argv, "command source started");
    let settings = &settings;
    every(settings.interval, tx, stats, shutdown, |taken_at| async move {
        Capture {
            site: settings.source.clone(),
            taken_at,
            name: format!("{}@{}", settings.source, rfc3339(taken_at)),
            data: take(settings).await,
            source: settings.source.clone(),
        }
    })
    .await
}

/// Runs the command once: the image it wrote to stdout, or why there is none.
pub async fn take(settings: &CommandSettings) -> CaptureData {
    let Some((program, args)) = settings.argv.split_first() else {
        return CaptureData::Failed("no command configured".into());
    };
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return CaptureData::Failed(format!("cannot run `{program}`: {e}")),
    };
    // Killing the group on every early exit (timeout, oversize output, shutdown dropping this future)
    // also stops grandchildren such as the programs of a shell pipeline.
    let mut group = GroupGuard(child.id());
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return CaptureData::Failed(format!("`{program}`: no pipes to the child"));
    };

    let max = settings.max_bytes;
    // try_join: the first failure (too much output) ends the wait at once; a child blocked writing
    // to a pipe nobody reads would otherwise only end at the timeout.
    let outcome = tokio::time::timeout(settings.timeout, async {
        tokio::try_join!(
            async {
                match read_capped(&mut stdout, max).await {
                    Ok(Some(out)) => Ok(out),
                    Ok(None) => Err(format!("wrote more than {max} bytes to stdout")),
                    Err(e) => Err(format!("cannot read its stdout: {e}")),
                }
            },
            async { Ok(read_tail(&mut stderr).await) },
            async { child.wait().await.map_err(|e| format!("cannot wait for it: {e}")) },
        )
    })
    .await;
    let (out, err, status) = match outcome {
        Ok(Ok(parts)) => parts,
        Ok(Err(reason)) => return CaptureData::Failed(format!("`{program}` {reason}")),
        Err(_) => {
            drop(group);
            // The explicit kill also reaps the child now rather than in tokio's background reaper.
            let _ = child.kill().await;
            return CaptureData::Failed(format!(
                "`{program}` timed out after {} and was killed",
                humantime::format_duration(settings.timeout)
            ));
        }
    };
    group.disarm();
    let stderr_line = last_line(&err);
    if !status.success() {
        return CaptureData::Failed(format!("`{program}` {}{stderr_line}", describe(status)));
    }
    if out.is_empty() {
        return CaptureData::Failed(format!("`{program}` wrote nothing to stdout{stderr_line}"));
    }
    CaptureData::Bytes(out)
}

/// Kills the child's process group when dropped, unless the command finished on its own.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions. The group id is our child's pid,
            // not yet reaped (or reaped an instant ago), so it names the child's own group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Reads everything, or `None` as soon as there is more than `max` bytes.
async fn read_capped(
    reader: &mut (impl AsyncRead + Unpin),
    max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut out).await?;
    Ok((out.len() as u64 <= max).then_some(out))
}

/// Reads to the end, keeping the last [`STDERR_TAIL`] bytes (a chatty program must not fill memory,
/// nor block on a full pipe because we stopped reading).
async fn read_tail(reader: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = reader.read(&mut chunk).await {
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    tail
}

/// `": <last non-empty line of stderr>"`, or nothing when stderr was empty.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(argv: &[&str], timeout: Duration) -> CommandSettings {
        CommandSettings {
            source: "cam0".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            interval: Duration::from_secs(60),
            timeout,
            max_bytes: 16,
        }
    }

    fn failure(data: CaptureData) -> String {
        match data {
            CaptureData::Failed(reason) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stdout_is_the_image() {
        let s = settings(&["sh", "-c", "printf 'png bytes'"], Duration::from_secs(10));
        assert_eq!(take(&s).await, CaptureData::Bytes(b"png bytes".to_vec()));
    }

    #[tokio::test]
    async fn exit_status_and_stderr_explain_a_failure() {
        let s = settings(
            &["sh", "-c", "echo first >&2; echo 'no camera found' >&2; exit 3"],
            Duration::from_secs(10),
        );
        assert_eq!(failure(take(&s).await), "`sh` exited with status 3: no camera found");
        let s = settings(&["sh", "-c", "echo busy >&2"], Duration::from_secs(10));
        assert_eq!(failure(take(&s).await), "`sh` wrote nothing to stdout: busy");
        let s = settings(&["/nonexistent/rpicam-still"], Duration::from_secs(10));
        assert!(failure(take(&s).await).starts_with("cannot run `/nonexistent/rpicam-still`: "));
    }

    #[tokio::test]
    async fn too_much_output_is_refused() {
        let s = settings(&["sh", "-c", "head -c 100000 /dev/zero"], Duration::from_secs(10));
        assert_eq!(failure(take(&s).await), "`sh` wrote more than 16 bytes to stdout");
    }

    #[test]
    fn settings_from_config_report_every_problem() {
        let config = CommandSource {
            command: vec![],
            interval: "0s".into(),
            timeout: "soon".into(),
            mask: Default::default(),
        };
        let err = CommandSettings::from_config("cam0", &config).expect_err("invalid");
        let SourceError::Config(problems) = err else { panic!("{err}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["sources.cam0.command", "sources.cam0.interval", "sources.cam0.timeout"]);
    }
}
