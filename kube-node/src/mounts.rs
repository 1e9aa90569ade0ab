//! How [`ProcessRuntime`](crate::ProcessRuntime) shows volume mounts to host processes, which
//! have no root filesystem of their own. See [`VolumeMounts`].

use std::io;
use std::path::{Component, Path, PathBuf};

use kube_core::runtime::Mount;

/// How [`ProcessRuntime`](crate::ProcessRuntime) makes a container's volume mounts
/// (`emptyDir`, `configMap`, `secret`, `hostPath`) visible to its process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum VolumeMounts {
    /// [`Namespace`](Self::Namespace) when the runtime runs as root, else
    /// [`Symlinks`](Self::Symlinks) (the default).
    #[default]
    Auto,
    /// The process runs in a private mount namespace (`unshare --mount`), chrooted into a
    /// view of the host's filesystem with each volume bind-mounted at its mount path, as in a
    /// container: nothing changes on the host. The view is a tmpfs holding a bind mount of
    /// every top-level entry of `/`; a mount path whose parent does not exist on the host is
    /// made by covering its deepest existing ancestor with a tmpfs that re-binds that
    /// directory's entries (so `/etc/app` leaves the rest of `/etc` visible). Read-only
    /// mounts are remounted read-only. Needs root; costs one `mount` per entry so shadowed
    /// (a few ms each: shadowing `/etc` takes a while).
    Namespace,
    /// Each mount appears under the process's working directory (by default its sandbox's
    /// directory) at its mount path made relative (`/etc/app` → `./etc/app`), as a symlink
    /// to the volume: a process that reads its volumes by relative path finds them. Works
    /// unprivileged; the host filesystem is not changed outside the sandbox's directory.
    Symlinks,
    /// Mounts are ignored.
    Ignore,
}

impl VolumeMounts {
    /// The mode [`Auto`](Self::Auto) stands for on this host.
    pub(crate) fn resolve(self) -> Self {
        match self {
            Self::Auto => {
                // /proc/self belongs to the effective user.
                let root = std::fs::metadata("/proc/self")
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
                if root {
                    Self::Namespace
                } else {
                    Self::Symlinks
                }
            }
            other => other,
        }
    }
}

/// The mount path as a relative path with only normal components, or `None` if it has
/// `..` (or is empty).
fn relative(container_path: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(container_path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// [`VolumeMounts::Symlinks`]: links `<base>/<mount path>` to each volume.
pub(crate) fn link(mounts: &[Mount], base: &Path) -> io::Result<()> {
    for m in mounts {
        let rel = relative(&m.container_path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mount path {:?} is not a plain path", m.container_path),
            )
        })?;
        let link = base.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&link)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a volume link", link.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&m.host_path, &link)?;
    }
    Ok(())
}

/// The shell script behind [`VolumeMounts::Namespace`]. Arguments: the view's directory, the
/// working directory, a file to create once the mounts are in place, the number of mounts, then per mount its host path, mount path, `dir`
/// or `file`, and `ro` or `rw`; then the command.
const NAMESPACE_SCRIPT: &str = r#"set -e
T=$1; WD=$2; READY=$3; N=$4; shift 4
mount -t tmpfs kn-root "$T"
fill() {
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n="$2/${e##*/}"
    if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$n"
    elif [ -d "$e" ]; then mkdir "$n"; mount --rbind "$e" "$n"
    else : > "$n"; mount --bind "$e" "$n"; fi
  done
}
fill "" "$T"
shadowed=" "
volumes=" "
while [ "$N" -gt 0 ]; do
  H=$1; P=$2; KIND=$3; RO=$4; shift 4; N=$((N-1))
  if [ ! -e "$T$P" ] && [ ! -L "$T$P" ]; then
    Q=$(dirname "$P")
    while [ ! -e "$T$Q" ]; do Q=$(dirname "$Q"); done
    inside=no
    for v in $volumes; do case "$Q/" in "$v"/*) inside=yes;; esac; done
    case "$shadowed" in *" $Q "*) inside=yes;; esac
    if [ "$Q" != / ] && [ "$inside" = no ]; then
      mount -t tmpfs kn-shadow "$T$Q"
      fill "$Q" "$T$Q"
      shadowed="$shadowed$Q "
    fi
    if [ "$KIND" = dir ]; then mkdir -p "$T$P"; else mkdir -p "$(dirname "$T$P")"; : > "$T$P"; fi
  fi
  mount --bind "$H" "$T$P"
  if [ "$RO" = ro ]; then mount -o remount,bind,ro "$T$P"; fi
  volumes="$volumes$P "
done
: > "$READY"
exec chroot "$T" sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$WD" "$@"
"#;

/// `path` with the symlinks among its existing ancestors resolved on the host, whose tree the
/// view mirrors: the view copies links as they are, so `/var/run -> /run` would lead the
/// script out of the view to the host's `/run`; `/var/run/secrets` becomes `/run/secrets`.
fn through_host_links(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
    match std::fs::canonicalize(existing) {
        Ok(mut resolved) => {
            resolved.extend(rest.iter().rev());
            resolved
        }
        Err(_) => path.to_path_buf(),
    }
}

/// [`VolumeMounts::Namespace`]: the words to put before a container's argv so it runs in a
/// private mount namespace, chrooted into a view of the host with its volumes mounted. `view`
/// is an empty directory for the view's root; `wd` the process's working directory; `ready`
/// is created once the mounts are in place, just before the command runs.
pub(crate) fn namespace_prefix(
    mounts: &[Mount],
    view: &Path,
    wd: &Path,
    ready: &Path,
) -> io::Result<Vec<String>> {
    let mut sorted: Vec<(&Mount, PathBuf)> = Vec::new();
    for m in mounts {
        let rel = relative(&m.container_path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mount path {:?} is not a plain path", m.container_path),
            )
        })?;
        sorted.push((m, through_host_links(&Path::new("/").join(rel))));
    }
    // Parents before children, as the kubelet orders them.
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    let text = |p: &Path| {
        p.to_str().map(str::to_string).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not UTF-8", p.display()),
            )
        })
    };
    let mut words = vec![
        "unshare".to_string(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        NAMESPACE_SCRIPT.into(),
        // `$0` of the script.
        "kn-mounts".into(),
        text(view)?,
        text(wd)?,
        text(ready)?,
        sorted.len().to_string(),
    ];
    for (m, path) in sorted {
        let kind = if std::fs::metadata(&m.host_path)?.is_dir() {
            "dir"
        } else {
            "file"
        };
        words.push(text(&m.host_path)?);
        words.push(text(&path)?);
        words.push(kind.into());
        words.push(if m.read_only { "ro" } else { "rw" }.into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_become_relative() {
        assert_eq!(relative("/etc/app"), Some(PathBuf::from("etc/app")));
        assert_eq!(relative("data/./x"), Some(PathBuf::from("data/x")));
        assert_eq!(relative("/a/../b"), None);
        assert_eq!(relative("/"), None);
    }

    #[test]
    fn symlinks_appear_under_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("volume");
        std::fs::write(volume.join("key"), "value").expect("file");
        let base = dir.path().join("sandbox");
        let mounts = [Mount {
            host_path: volume.clone(),
            container_path: "/etc/app".into(),
            read_only: true,
        }];
        link(&mounts, &base).expect("linked");
        link(&mounts, &base).expect("linking again replaces the link");
        assert_eq!(
            std::fs::read_to_string(base.join("etc/app/key")).expect("read"),
            "value"
        );
        let bad = [Mount {
            host_path: volume,
            container_path: "/../escape".into(),
            read_only: false,
        }];
        assert!(link(&bad, &base).is_err());
    }
}
