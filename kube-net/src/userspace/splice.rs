//! Relaying a TCP connection's two directions.
//!
//! Each direction starts with plain reads and writes through a small buffer, which is what
//! short request/response connections need and costs no extra file descriptors. A direction
//! that keeps filling the buffer is bulk traffic: it switches to `splice(2)` through a pipe
//! (taken from a pool), so bytes go socket → pipe → socket inside the kernel without being
//! copied through userspace.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Bytes moved per splice call; pooled pipes are grown to hold that much.
const CHUNK: usize = 1 << 20;
/// The plain phase starts with a buffer this small (most connections exchange a few small
/// messages) and grows it to [`RelayMode::buffer`] once a read fills it.
const FIRST_BUFFER: usize = 2048;
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
    let one_ended = AtomicBool::new(false);
    tokio::try_join!(
        one_way(ar, bw, mode, pipes, &one_ended),
        one_way(br, aw, mode, pipes, &one_ended)
    )?;
    Ok(())
}

/// End of stream from `to`'s peer: pass the half-close on, keeping the other direction open.
/// When the other direction has already ended, the relay is over and both sockets are closed
/// right after, which sends the FIN anyway (nothing is left unread, so it is not a reset): the
/// `shutdown` call is skipped, one system call less per connection.
async fn end(to: &mut WriteHalf<'_>, one_ended: &AtomicBool) -> io::Result<()> {
    if one_ended.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    to.shutdown().await
}

async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mode: RelayMode,
    pipes: &PipePool,
    one_ended: &AtomicBool,
) -> io::Result<()> {
    let max = mode.buffer.max(1024);
    let mut buf = vec![0u8; FIRST_BUFFER.min(max)];
    let mut full_bytes = 0usize;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return end(&mut to, one_ended).await;
        }
        to.write_all(&buf[..n]).await?;
        if n == buf.len() {
            full_bytes += n;
            if buf.len() < max {
                buf.resize(max, 0);
            }
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
            return end(&mut to, one_ended).await;
        }
    };
    spliced(from, &mut to, &pipe).await?;
    // Only a pipe that was fully drained goes back (on error it is dropped above by `?`).
    pipes.give(pipe);
    end(&mut to, one_ended).await
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
async fn spliced(from: ReadHalf<'_>, to: &mut WriteHalf<'_>, pipe: &Pipe) -> io::Result<()> {
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
            return Ok(());
        }
        let dst: &TcpStream = (*to).as_ref();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A relay between a client and a backend that reads everything, then answers with what
    /// it got and closes: the client's half-close must reach the backend, bulk data must
    /// arrive whole (through splice), and the client must see the answer and a clean end.
    async fn half_close_round_trip(zero_copy: bool) {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let sum: u64 = got.iter().map(|b| u64::from(*b)).sum();
            s.write_all(format!("{} {sum}", got.len()).as_bytes())
                .await
                .unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let pipes = PipePool::default();
        let mode = RelayMode {
            zero_copy,
            buffer: 16 * 1024,
        };
        let proxy = async {
            let (mut client, _) = front.accept().await.unwrap();
            let mut upstream = TcpStream::connect(backend_addr).await.unwrap();
            relay(&mut client, &mut upstream, mode, &pipes).await
        };
        let client = async {
            let mut s = TcpStream::connect(front_addr).await.unwrap();
            let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
            let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
            s.write_all(&data).await.unwrap();
            s.shutdown().await.unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.unwrap();
            assert_eq!(answer, format!("{} {sum}", data.len()));
        };
        let (relayed, ()) = tokio::join!(proxy, client);
        relayed.unwrap();
    }

    #[tokio::test]
    async fn half_close_and_bulk_pass_through_with_and_without_splice() {
        half_close_round_trip(true).await;
        half_close_round_trip(false).await;
    }
}
