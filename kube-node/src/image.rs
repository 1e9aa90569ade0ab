//! Test images without a registry: a busybox root filesystem built from the host's static
//! busybox (Debian's `busybox-static`).

use std::io;
use std::path::{Path, PathBuf};

/// Where Debian's `busybox-static` installs the binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Builds a root filesystem at `dir` holding `/bin/busybox` (copied from `busybox`, a static
/// binary such as [`HOST_BUSYBOX`]) with one relative symlink per applet, the mount points
/// runtimes need, and a minimal `/etc`. Returns `dir`.
///
/// ```no_run
/// let rootfs = kube_node::image::busybox_rootfs(
///     std::path::Path::new("/tmp/busybox"),
///     std::path::Path::new(kube_node::image::HOST_BUSYBOX),
/// )?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn busybox_rootfs(dir: &Path, busybox: &Path) -> io::Result<PathBuf> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["proc", "dev", "sys", "tmp", "etc", "root", "var", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let target = bin.join("busybox");
    if !target.exists() {
        std::fs::copy(busybox, &target)?;
    }
    // Ask the source binary: executing the fresh copy can fail with ETXTBSY while another
    // thread's fork still holds the copy's write descriptor.
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    if !list.status.success() {
        return Err(io::Error::other(format!(
            "{} --list failed: {}",
            busybox.display(),
            String::from_utf8_lossy(&list.stderr)
        )));
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if link.symlink_metadata().is_err() {
            // Relative, so the link works inside the container's root.
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    Ok(dir.to_path_buf())
}
