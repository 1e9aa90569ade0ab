//! Network namespaces for tests: created with a unique name, removed on drop (even when the
//! test fails), and a way to run client code inside one.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Whether `ip` and `nft` are usable. Under `CI=true` their absence fails the test loudly;
/// elsewhere the test is skipped with a message.
pub(crate) fn tools_present(test: &str) -> bool {
    let ok = ["ip", "nft"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let root = nix::unistd::geteuid().is_root();
    if ok && root {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs `ip` and `nft` (iproute2, nftables) and root; missing under CI=true"
    );
    eprintln!("SKIPPED {test}: needs `ip`, `nft` and root");
    false
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with `lo` up; deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kn-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS…`.
    pub(crate) fn ip(&self, args: &[&str]) {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        sh(&argv);
    }

    /// `PROGRAM ARGS…` inside the namespace (`ip netns exec`); must succeed.
    pub(crate) fn exec(&self, args: &[&str]) {
        let mut argv = vec!["ip", "netns", "exec", &self.name];
        argv.extend_from_slice(args);
        sh(&argv);
    }

    /// A veth pair: `local` here with `local_addrs`, `remote` in `other` with `remote_addrs`,
    /// both up (IPv6 addresses without duplicate address detection, usable at once).
    pub(crate) fn link(
        &self,
        local: &str,
        local_addrs: &[&str],
        other: &Netns,
        remote: &str,
        remote_addrs: &[&str],
    ) {
        self.ip(&[
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            &other.name,
        ]);
        for (ns, dev, addrs) in [(self, local, local_addrs), (other, remote, remote_addrs)] {
            for a in addrs {
                if a.contains(':') {
                    ns.ip(&["addr", "add", a, "dev", dev, "nodad"]);
                } else {
                    ns.ip(&["addr", "add", a, "dev", dev]);
                }
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
    }

    /// `nft ARGS…` inside the namespace; its stdout.
    pub(crate) fn nft(&self, args: &[&str]) -> String {
        let mut argv = vec!["netns", "exec", &self.name, "nft"];
        argv.extend_from_slice(args);
        let out = Command::new("ip").args(&argv).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens live there).
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        tokio::task::spawn_blocking(move || {
            // A fresh thread each time would be cleaner, but spawn_blocking threads are
            // reused; so enter on a scoped thread of our own.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let file = File::open(&path).unwrap();
                    setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
                    f()
                })
                .join()
                .unwrap()
            })
        })
        .await
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort, never panic in drop: a leftover namespace is reported, not fatal.
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}
