//! Netlink ([`rtnetlink`]) for the pod network: veth pairs, addresses and routes, in the
//! node's network namespace or inside a pod's.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The kernel's "no such device" (`ENODEV`).
const ENODEV: i32 = 19;
/// "File exists" (`EEXIST`).
const EEXIST: i32 = 17;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection bound to one network namespace (the one its socket was opened in).
/// Its I/O task runs on the current tokio runtime and ends with the last handle.
#[derive(Clone, Debug)]
pub(crate) struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the caller's network namespace (the node's).
    pub(crate) fn here() -> Result<Self, String> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection inside the network namespace at `netns`: its socket is opened by a
    /// short-lived thread that enters the namespace (a socket stays in the namespace it was
    /// made in), so no thread of the runtime ever leaves the node's namespace.
    pub(crate) fn inside(netns: &Path) -> Result<Self, String> {
        let file = File::open(netns)
            .map_err(|e| format!("opening network namespace {}: {e}", netns.display()))?;
        let runtime = tokio::runtime::Handle::current();
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("entering {}: {e}", netns.display()))?;
                    // The socket registers with the runtime's reactor.
                    let _entered = runtime.enter();
                    rtnetlink::new_connection().map_err(|e| {
                        format!("opening a netlink socket in {}: {e}", netns.display())
                    })
                })
                .join()
        });
        let (connection, handle, _) =
            opened.map_err(|_| "the thread opening a netlink socket panicked".to_string())??;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of the link named `name`, if there is one.
    pub(crate) async fn index(&self, name: &str) -> Result<Option<u32>, String> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(format!("looking up link {name}: {e}")),
        }
    }

    /// Creates a veth pair: `host` here, its peer `peer` straight in the namespace `netns`.
    /// Returns the host end's index.
    pub(crate) async fn add_veth(
        &self,
        host: &str,
        peer: &str,
        netns: &File,
    ) -> Result<u32, String> {
        let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| format!("creating veth {host}: {e}"))?;
        self.index(host)
            .await?
            .ok_or_else(|| format!("veth {host} vanished after it was created"))
    }

    /// Deletes the link `name` (with a veth, its peer too); `false` if there was none.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool, String> {
        let message = LinkUnspec::new_with_name(name).build();
        match self.handle.link().del_with_message(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(format!("deleting link {name}: {e}")),
        }
    }

    /// Sets the link up.
    pub(crate) async fn up(&self, index: u32) -> Result<(), String> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| format!("setting link {index} up: {e}"))
    }

    /// Adds `ip/prefix_len` to the link (fine if it is there).
    pub(crate) async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), String> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(EEXIST) => Err(format!(
                "adding address {ip}/{prefix_len} to link {index}: {e}"
            )),
            _ => Ok(()),
        }
    }

    /// Adds (or replaces) the route to `dest/prefix_len` out of link `index`: through
    /// `gateway`, or straight on the link (scope link) without one.
    pub(crate) async fn add_route(
        &self,
        dest: Ipv4Addr,
        prefix_len: u8,
        index: u32,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), String> {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix_len)
            .output_interface(index);
        route = match gateway {
            Some(gw) => route.gateway(gw),
            None => route.scope(RouteScope::Link),
        };
        self.handle
            .route()
            .add(route.build())
            .replace()
            .execute()
            .await
            .map_err(|e| format!("adding route {dest}/{prefix_len} via link {index}: {e}"))
    }
}

/// Runs `future` to completion on a fresh single-threaded runtime in a thread of its own,
/// for `Drop` and builders (which cannot await, and may or may not be inside a runtime).
/// `None` if that runtime could not be made.
pub(crate) fn block_on<F>(future: F) -> Option<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                Some(runtime.block_on(future))
            })
            .join()
            .ok()
            .flatten()
    })
}

/// Writes a `/proc/sys` setting, e.g. `net/ipv4/ip_forward`.
pub(crate) fn sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = Path::new("/proc/sys").join(key);
    // Writing an unchanged value would still be fine; reading first spares a write.
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| format!("writing {}: {e}", path.display()))
}
