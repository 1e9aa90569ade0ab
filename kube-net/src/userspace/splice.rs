//! Zero-copy relaying with `splice(2)` through a pipe: bytes go socket → pipe → socket inside
//! the kernel, never through a userspace buffer. Falls back to buffered copying elsewhere.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Bytes moved per splice call; the pipe is grown to hold that much.
const CHUNK: usize = 1 << 20;

/// Relays both directions between `a` and `b` until both have ended (half-closes propagate).
/// With `zero_copy` it splices; if pipes cannot be made it copies through `buffer`-byte buffers.
pub(crate) async fn relay(
    a: &mut TcpStream,
    b: &mut TcpStream,
    zero_copy: bool,
    buffer: usize,
) -> io::Result<()> {
    if zero_copy {
        if let (Ok(p1), Ok(p2)) = (Pipe::new(), Pipe::new()) {
            let (ar, aw) = a.split();
            let (br, bw) = b.split();
            tokio::try_join!(one_way(ar, bw, p1), one_way(br, aw, p2))?;
            return Ok(());
        }
    }
    tokio::io::copy_bidirectional_with_sizes(a, b, buffer, buffer).await?;
    Ok(())
}

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

async fn one_way(from: ReadHalf<'_>, mut to: WriteHalf<'_>, pipe: Pipe) -> io::Result<()> {
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
            // End of stream: pass the half-close on, keep the other direction open.
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
