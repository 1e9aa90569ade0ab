//! A blob followed while it downloads: the writer tells how far it got, and a reader (the
//! layer applier's) reads up to there, waiting for more, and sees the end only once the
//! download is verified.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How far a download is, for the applier following it.
pub(super) struct Progress {
    state: Mutex<(u64, Option<Result<(), String>>)>,
    changed: std::sync::Condvar,
}

impl Progress {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((0, None)),
            changed: std::sync::Condvar::new(),
        })
    }

    pub(super) fn advance(&self, n: u64) {
        lock(&self.state).0 += n;
        self.changed.notify_all();
    }

    /// Ends the download (the first verdict stands).
    pub(super) fn finish(&self, verdict: Result<(), String>) {
        let mut state = lock(&self.state);
        if state.1.is_none() {
            state.1 = Some(verdict);
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Fails the progress if the download ends without a verdict (aborted, even unpolled).
pub(super) struct CloseOnDrop(pub(super) Arc<Progress>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.finish(Err("download cancelled".into()));
    }
}

/// Reads a blob as it is downloaded (positioned reads on its own handle), ending only once
/// the download is verified, failing if it is not.
pub(super) struct FollowReader {
    file: std::fs::File,
    pos: u64,
    progress: Arc<Progress>,
}

impl FollowReader {
    pub(super) fn new(file: std::fs::File, progress: Arc<Progress>) -> Self {
        Self {
            file,
            pos: 0,
            progress,
        }
    }

    /// Over a blob already held.
    pub(super) fn done(file: std::fs::File, len: u64) -> Self {
        let progress = Progress::new();
        progress.advance(len);
        progress.finish(Ok(()));
        Self::new(file, progress)
    }
}

impl std::io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let available = {
            let mut state = lock(&self.progress.state);
            loop {
                if state.0 > self.pos {
                    break state.0 - self.pos;
                }
                match &state.1 {
                    Some(Ok(())) => return Ok(0),
                    Some(Err(e)) => return Err(std::io::Error::other(e.clone())),
                    None => {
                        state = self
                            .progress
                            .changed
                            .wait(state)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Bytes gathered before a write (fewer, larger writes; the follower sees them at once).
pub(super) const WRITE_CHUNK: usize = 1 << 20;

/// A blob's temporary file, telling its follower how much is written. Writes go to the page
/// cache, so they are done inline.
pub(super) struct BlobWriter {
    pub(super) file: std::fs::File,
    pub(super) buffer: Vec<u8>,
    pub(super) progress: Option<Arc<Progress>>,
}

impl BlobWriter {
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buffer)?;
        if let Some(p) = &self.progress {
            p.advance(self.buffer.len() as u64);
        }
        self.buffer.clear();
        Ok(())
    }
}

impl tokio::io::AsyncWrite for BlobWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.write_out())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.write_out())
    }
}
