//! The UDP listener: threads of their own that take queries off the socket in batches
//! (`recvmmsg`), answer them inline from the zone and send the answers in one call
//! (`sendmmsg`).
//!
//! Why not tokio tasks: on a loaded node a query's trip through a runtime (the reactor thread
//! wakes, the task lands on a worker, another worker may be woken to steal it) costs more in
//! thread switches than answering it, and the client waits for all of them. A blocking receive
//! wakes exactly one thread, which answers and sends without handing anything over; under
//! load one receive drains what has queued up, so the system calls per query fall as the rate
//! rises. Only what needs upstream leaves the thread, as a task on the runtime.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::answer::{self, MAX_UDP_PAYLOAD, Outcome, Transport};
use super::serve::Shared;

/// Queries taken off the socket per receive (and answers sent per send) at most.
const BATCH: usize = 32;

/// How long a thread waits for a query before it looks whether the server is shutting down.
const POLL: Duration = Duration::from_millis(100);

/// The size of each receive buffer: the largest query we take.
const SLOT: usize = MAX_UDP_PAYLOAD as usize;

/// Starts `threads` threads answering on `socket` (made blocking here) until `shutdown`. Each
/// returned receiver completes when its thread has ended.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    socket: UdpSocket,
    threads: usize,
    shutdown: CancellationToken,
) -> io::Result<Vec<oneshot::Receiver<()>>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(POLL))?;
    let socket = Arc::new(socket);
    let runtime = Handle::current();
    (0..threads.max(1))
        .map(|i| {
            let (done, ended) = oneshot::channel();
            let (shared, socket, runtime, shutdown) = (
                shared.clone(),
                socket.clone(),
                runtime.clone(),
                shutdown.clone(),
            );
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    Listener::new(shared, socket, runtime).run(&shutdown);
                    // Dropped also when the thread panics: the receiver completes either way.
                    drop(done);
                })?;
            Ok(ended)
        })
        .collect()
}

/// One thread's socket, buffers and message headers, allocated once.
struct Listener {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    runtime: Handle,
    /// `BATCH` receive buffers of `SLOT` bytes, back to back.
    queries: Vec<u8>,
    /// For each received query: its length and sender.
    received: Vec<(usize, SockaddrStorage)>,
    /// The answers of this batch and where they go.
    answers: Vec<Vec<u8>>,
    to: Vec<Option<SockaddrStorage>>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
}

impl Listener {
    fn new(shared: Arc<Shared>, socket: Arc<UdpSocket>, runtime: Handle) -> Self {
        Self {
            shared,
            socket,
            runtime,
            queries: vec![0; BATCH * SLOT],
            received: Vec::with_capacity(BATCH),
            answers: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            to: Vec::with_capacity(BATCH),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    fn run(&mut self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            if self.receive() {
                self.answer();
                self.send();
            }
        }
    }

    /// Waits for a query (at most `POLL`), then takes what else is queued, up to `BATCH`.
    /// `false`: nothing came.
    fn receive(&mut self) -> bool {
        self.received.clear();
        let fd = self.socket.as_raw_fd();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .queries
            .chunks_mut(SLOT)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        // MSG_WAITFORONE: block for the first datagram only, then take what is there.
        let batch = recvmmsg(
            fd,
            &mut self.recv_headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        );
        match batch {
            Ok(batch) => {
                for message in batch {
                    if let Some(from) = message.address {
                        self.received.push((message.bytes.min(SLOT), from));
                    }
                }
            }
            // The poll timeout, or a signal.
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket is still fine.
                tracing::debug!(error = %e, "dns receive failed");
            }
        }
        !self.received.is_empty()
    }

    /// Answers the received queries from the zone, under one read lock for the batch; what
    /// needs upstream goes to a task.
    fn answer(&mut self) {
        self.to.clear();
        let zone = self.shared.zone.read().unwrap_or_else(|p| p.into_inner());
        let recursion = self.shared.recursion();
        for (i, &(len, from)) in self.received.iter().enumerate() {
            let packet = &self.queries[i * SLOT..i * SLOT + len];
            let out = &mut self.answers[self.to.len()];
            match answer::handle(&zone, packet, Transport::Udp, recursion, out) {
                Outcome::Reply => self.to.push(Some(from)),
                Outcome::Drop => {}
                pending => {
                    // Upstream may take seconds: never on this thread.
                    let (shared, socket) = (self.shared.clone(), self.socket.clone());
                    let packet = packet.to_vec();
                    self.runtime.spawn(async move {
                        let mut out = Vec::new();
                        if shared
                            .complete(pending, &packet, Transport::Udp, &mut out)
                            .await
                        {
                            send_now(socket.as_raw_fd(), &out, &from);
                        }
                    });
                }
            }
        }
    }

    /// Sends the batch's answers, as few calls as the kernel allows; an answer it refuses
    /// (say a firewall rule) is skipped, the rest still go.
    fn send(&mut self) {
        let fd = self.socket.as_raw_fd();
        let slices: Vec<[IoSlice<'_>; 1]> = self.answers[..self.to.len()]
            .iter()
            .map(|a| [IoSlice::new(a)])
            .collect();
        let mut start = 0;
        while start < slices.len() {
            let sent = sendmmsg(
                fd,
                &mut self.send_headers,
                &slices[start..],
                &self.to[start..],
                [],
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            match sent {
                Ok(n) if start + n >= slices.len() => return,
                // The kernel stops at the first answer it fails to send: skip that one.
                Ok(n) => start += n + 1,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "dns reply failed");
                    start += 1;
                }
            }
        }
    }
}

/// Sends one answer from outside the listener threads, without blocking (the socket is in
/// blocking mode for them): when the send buffer is full the answer is lost, as a datagram
/// may be, and the client asks again.
fn send_now(fd: RawFd, answer: &[u8], to: &SockaddrStorage) {
    if let Err(e) = sendto(fd, answer, to, MsgFlags::MSG_DONTWAIT) {
        tracing::debug!(error = %e, "dns reply failed");
    }
}
