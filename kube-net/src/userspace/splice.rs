//! Relaying a TCP connection's two directions.
//!
//! Each direction starts with plain reads and writes through a small buffer, which is what
//! short request/response connections need and costs no extra file descriptors. A direction
//! that keeps filling the buffer is bulk traffic: it switches to `splice(2)` through a pipe
//! (taken from a pool), so bytes go socket → pipe → socket inside the kernel without being
//! copied through userspace.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Bytes moved per splice call; pooled pipes are grown to hold that much.
const CHUNK: usize = 1 << 20;
/// A direction switches to splice after this many bytes in full buffers.
const SPLICE_AFTER: usize = 128 * 1024;
/// Pipes kept for reuse (two per bulk connection in flight).
const POOL_MAX: usize = 64;

/// Empty pipes ready for reuse: creating and sizing one costs four syscalls.
#[derive(Debug, Default)]
pub(crate) struct PipePool(Mutex<Vec<Pipe>>);

impl PipePool {
    fn take(&self) -> io::Result<Pipe> {
        let pooled = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match pooled {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Returns a pipe that is known to be empty.
    fn give(&self, pipe: Pipe) {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(pipe);
        }
    }
}

/// How a connection is relayed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayMode {
    /// Switch bulk directions to splice.
    pub(crate) zero_copy: bool,
    /// Buffer size per direction for the plain phase.
    pub(crate) buffer: usize,
}

/// Relays both directions between `a` and `b` until both have ended (half-closes propagate).
pub(crate) async fn relay(
    a: &mut TcpStream,
    b: &mut TcpStream,
    mode: RelayMode,
    pipes: &PipePool,
) -> io::Result<()> {
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    tokio::try_join!(one_way(ar, bw, mode, pipes), one_way(br, aw, mode, pipes))?;
    Ok(())
}

async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mode: RelayMode,
    pipes: &PipePool,
) -> io::Result<()> {
    let mut buf = vec![0u8; mode.buffer.max(1024)];
    let mut full_bytes = 0usize;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // End of stream: pass the half-close on, keep the other direction open.
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        if n == buf.len() {
            full_bytes += n;
        }
        if mode.zero_copy && full_bytes >= SPLICE_AFTER {
            break;
        }
    }
    drop(buf);
    let pipe = match pipes.take() {
        Ok(pipe) => pipe,
        // Out of file descriptors, say: keep copying rather than fail the connection.
        Err(_) => {
            tokio::io::copy(&mut from, &mut to).await?;
            to.shutdown().await?;
            return Ok(());
        }
    };
    spliced(from, to, &pipe).await?;
    // Only a pipe that was fully drained goes back (on error it is dropped above by `?`).
    pipes.give(pipe);
    Ok(())
}

#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A bigger pipe means fewer wakeups per megabyte; the default (64 KiB) still works.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
        Ok(Self { read, write })
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Socket → pipe → socket until end of stream; the pipe is empty whenever this returns `Ok`.
async fn spliced(from: ReadHalf<'_>, mut to: WriteHalf<'_>, pipe: &Pipe) -> io::Result<()> {
    let src: &TcpStream = from.as_ref();
    loop {
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe.write, None, CHUNK, flags()).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        let dst: &TcpStream = to.as_ref();
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, dst, None, left, flags()).map_err(io::Error::from)
            }) {
                Ok(m) => left = left.saturating_sub(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
