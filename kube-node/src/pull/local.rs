//! What the runc and host-process runtimes share: images registered locally beside an
//! [`ImageStore`], and how a container's argv, environment and user follow from its image, as
//! the kubelet and containerd derive them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kube_core::runtime::{
    AuthConfig, ContainerConfig, Image, ImageFsInfo, PulledImage, RuntimeError,
};

use super::reference::normalize;
use super::store::{ImageConfig, ImageStore, StoredImage};

/// An image a container can run on.
#[derive(Clone, Debug)]
pub(crate) enum Resolved {
    /// A root filesystem registered with the runtime (no config: command/args are needed).
    Registered(PathBuf),
    /// A pulled image.
    Stored(Box<StoredImage>),
}

impl Resolved {
    /// Its root filesystem.
    pub(crate) fn rootfs(&self) -> &Path {
        match self {
            Self::Registered(p) => p,
            Self::Stored(s) => &s.rootfs,
        }
    }

    /// Its config, if it has one.
    pub(crate) fn config(&self) -> Option<&ImageConfig> {
        match self {
            Self::Registered(_) => None,
            Self::Stored(s) => Some(&s.config),
        }
    }
}

/// Registered images (always present) and the pull store.
#[derive(Clone, Debug)]
pub(crate) struct ImageService {
    /// (normalized name, as registered, root filesystem).
    registered: Vec<(String, String, PathBuf)>,
    store: ImageStore,
}

fn key(image: &str) -> String {
    normalize(image).map_or_else(|_| image.to_owned(), |n| n.to_string())
}

/// The ID reported for a registered root filesystem.
fn registered_id(name: &str, rootfs: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{name}\0{}", rootfs.display()).as_bytes());
    format!("sha256:{digest:x}")
}

impl ImageService {
    /// Over `registered` (reference → root filesystem) and `store`.
    pub(crate) fn new(registered: &HashMap<String, PathBuf>, store: ImageStore) -> Self {
        let mut registered: Vec<_> = registered
            .iter()
            .map(|(name, dir)| (key(name), name.clone(), dir.clone()))
            .collect();
        registered.sort();
        Self { registered, store }
    }

    /// The store.
    pub(crate) fn store(&self) -> &ImageStore {
        &self.store
    }

    fn registered(&self, image: &str) -> Option<&(String, String, PathBuf)> {
        let wanted = key(image);
        self.registered
            .iter()
            .find(|(k, raw, _)| *k == wanted || raw == image)
    }

    /// The image `image` names: a registered one first, then a pulled one.
    pub(crate) fn resolve(&self, image: &str) -> Option<Resolved> {
        if let Some((_, _, dir)) = self.registered(image) {
            return Some(Resolved::Registered(dir.clone()));
        }
        self.store
            .status(image)
            .map(|s| Resolved::Stored(Box::new(s)))
    }

    fn registered_image(&self, (k, raw, dir): &(String, String, PathBuf)) -> Image {
        let mut image = Image::new(registered_id(raw, dir), vec![k.clone()]);
        image.size_bytes = 0;
        image
    }

    /// Pulls `image` (registered images are present and never pulled).
    pub(crate) async fn pull(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        if let Some(r) = self.registered(image) {
            let id = registered_id(&r.1, &r.2);
            return Ok(PulledImage::new(r.0.clone(), id, 0));
        }
        let name = normalize(image).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let stored = self.store.pull(&name, auth).await?;
        Ok(PulledImage::new(
            stored.image_ref(),
            stored.id.clone(),
            stored.size_bytes,
        ))
    }

    /// CRI's ImageStatus.
    pub(crate) fn status(&self, image: &str) -> Option<Image> {
        if let Some(r) = self.registered(image) {
            return Some(self.registered_image(r));
        }
        self.store.status(image).map(|s| s.to_image())
    }

    /// CRI's ListImages.
    pub(crate) fn list(&self) -> Vec<Image> {
        let mut out: Vec<Image> = self
            .registered
            .iter()
            .map(|r| self.registered_image(r))
            .collect();
        out.extend(self.store.list().iter().map(StoredImage::to_image));
        out
    }

    /// CRI's RemoveImage (registered images stay: they are not the store's).
    pub(crate) fn remove(&self, image: &str) -> Result<(), RuntimeError> {
        if self.registered(image).is_some() {
            return Ok(());
        }
        self.store.remove(image)?;
        Ok(())
    }

    /// CRI's ImageFsInfo.
    pub(crate) fn fs_info(&self) -> ImageFsInfo {
        let mut info = ImageFsInfo::default();
        info.mountpoint = self.store.root().display().to_string();
        info.used_bytes = self.store.fs_usage();
        if let Ok(s) = nix::sys::statvfs::statvfs(self.store.root()) {
            let frag = s.fragment_size();
            info.capacity_bytes = s.blocks().saturating_mul(frag);
            info.available_bytes = s.blocks_available().saturating_mul(frag);
        }
        info
    }
}

/// The argv as the kubelet derives it: `command` + `args` if a command is given; else the
/// image's `Entrypoint` + `args` if args are; else `Entrypoint` + `Cmd`. Empty is an
/// [`RuntimeError::InvalidArgument`].
pub(crate) fn argv(
    config: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, RuntimeError> {
    let empty = ImageConfig::default();
    let image_config = image.unwrap_or(&empty);
    let argv: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else if !config.args.is_empty() {
        image_config
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect()
    } else {
        image_config
            .entrypoint
            .iter()
            .chain(&image_config.cmd)
            .cloned()
            .collect()
    };
    if argv.is_empty() {
        return Err(RuntimeError::InvalidArgument(match image {
            Some(_) => format!(
                "container {:?} has neither command nor args, and image {:?} has no Entrypoint or Cmd",
                config.name, config.image
            ),
            None => format!(
                "container {:?} has neither command nor args, and image {:?} is a local root filesystem without a config",
                config.name, config.image
            ),
        }));
    }
    Ok(argv)
}

/// The image's `Env` under the container's: the container's value wins for a name both set.
pub(crate) fn env(config: &ContainerConfig, image: Option<&ImageConfig>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for kv in image.map(|i| i.env.as_slice()).unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if !config.env.iter().any(|(ck, _)| ck == k) {
            out.retain(|(ok, _)| ok != k);
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out.extend(config.env.iter().cloned());
    out
}

/// The working directory: the container's, else the image's.
pub(crate) fn working_dir(config: &ContainerConfig, image: Option<&ImageConfig>) -> Option<String> {
    config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.and_then(|i| i.working_dir.clone()))
}

/// The identity a process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<u32>,
}

/// Reads `rel` (e.g. `etc/passwd`) of `rootfs` if it is a regular file (a symlink could
/// point out of the image).
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let path = rootfs.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// `(name, uid, gid)` of passwd lines.
fn passwd(rootfs: &Path) -> Vec<(String, u32, u32)> {
    read_image_file(rootfs, "etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// `(name, gid, members)` of group lines.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_image_file(rootfs, "etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

fn id_of(value: i64, what: &str) -> Result<u32, RuntimeError> {
    u32::try_from(value)
        .map_err(|_| RuntimeError::InvalidArgument(format!("invalid {what} {value}")))
}

/// The user to run as, as containerd resolves it: `run_as_user` over the image's `User`
/// (`name`, `uid`, `name:group`, `uid:gid`; names looked up in the image's `/etc/passwd` and
/// `/etc/group`), the group from `run_as_group`, else the user spec's group, else the user's
/// primary group in `/etc/passwd`, else 0; the user's supplementary groups from `/etc/group`.
pub(crate) fn user(
    rootfs: &Path,
    image_user: Option<&str>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
) -> Result<User, RuntimeError> {
    let users = passwd(rootfs);
    let groups = groups(rootfs);
    let (user_spec, group_spec) = match (run_as_user, image_user.filter(|u| !u.is_empty())) {
        (Some(uid), _) => (Some(uid.to_string()), None),
        (None, Some(spec)) => match spec.split_once(':') {
            Some((u, g)) => (Some(u.to_owned()), Some(g.to_owned())),
            None => (Some(spec.to_owned()), None),
        },
        (None, None) => (None, None),
    };
    let mut name = None;
    let (uid, mut gid) = match user_spec {
        None => (0, 0),
        Some(spec) => match spec.parse::<u32>() {
            Ok(uid) => {
                let entry = users.iter().find(|(_, u, _)| *u == uid);
                name = entry.map(|(n, _, _)| n.clone());
                (uid, entry.map_or(0, |(_, _, g)| *g))
            }
            Err(_) => {
                let (n, u, g) = users.iter().find(|(n, _, _)| *n == spec).ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "unable to find user {spec}: no matching entries in passwd file"
                    ))
                })?;
                name = Some(n.clone());
                (*u, *g)
            }
        },
    };
    if let Some(spec) = group_spec.filter(|g| !g.is_empty()) {
        gid = match spec.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| *n == spec)
                .map(|(_, g, _)| *g)
                .ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "unable to find group {spec}: no matching entries in group file"
                    ))
                })?,
        };
    }
    if let Some(g) = run_as_group {
        gid = id_of(g, "runAsGroup")?;
    }
    let _ = id_of(i64::from(uid), "runAsUser")?;
    if let Some(u) = run_as_user {
        id_of(u, "runAsUser")?;
    }
    let additional_gids = match &name {
        Some(n) => groups
            .iter()
            .filter(|(_, g, members)| members.contains(n) && *g != gid)
            .map(|(_, g, _)| *g)
            .collect(),
        None => vec![],
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            name: "c".into(),
            image: "img".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn argv_follows_the_four_kubernetes_cases() {
        let image = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["cmd".into()],
            ..ImageConfig::default()
        };
        let i = Some(&image);
        assert_eq!(argv(&container(&["/c"], &["a"]), i).unwrap(), ["/c", "a"]);
        assert_eq!(argv(&container(&["/c"], &[]), i).unwrap(), ["/c"]);
        assert_eq!(argv(&container(&[], &["a"]), i).unwrap(), ["/ep", "a"]);
        assert_eq!(argv(&container(&[], &[]), i).unwrap(), ["/ep", "cmd"]);
        let err = argv(&container(&[], &[]), Some(&ImageConfig::default())).unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");
        assert!(argv(&container(&[], &[]), None).is_err());
    }

    #[test]
    fn image_env_goes_under_the_containers() {
        let image = ImageConfig {
            env: vec!["PATH=/img".into(), "A=image".into(), "B=image".into()],
            ..ImageConfig::default()
        };
        let mut c = container(&["x"], &[]);
        c.env = vec![("A".into(), "container".into())];
        let env = env(&c, Some(&image));
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/img".to_string()),
                ("B".into(), "image".into()),
                ("A".into(), "container".into())
            ]
        );
        assert_eq!(
            working_dir(
                &c,
                Some(&ImageConfig {
                    working_dir: Some("/w".into()),
                    ..ImageConfig::default()
                })
            )
            .as_deref(),
            Some("/w")
        );
    }

    #[test]
    fn users_resolve_through_the_images_passwd_and_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\n",
        )
        .unwrap();
        let r = dir.path();
        let u =
            |spec: Option<&str>, ru: Option<i64>, rg: Option<i64>| user(r, spec, ru, rg).unwrap();
        assert_eq!(
            u(None, None, None),
            User {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            u(Some("app"), None, None),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50]
            }
        );
        assert_eq!(u(Some("1000"), None, None).gid, 1001);
        assert_eq!(u(Some("app:staff"), None, None).gid, 50);
        assert_eq!(
            u(Some("5:6"), None, None),
            User {
                uid: 5,
                gid: 6,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            u(Some("app"), Some(2000), None),
            User {
                uid: 2000,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(u(Some("app"), None, Some(7)).gid, 7);
        assert!(user(r, Some("nobody"), None, None).is_err());
        assert!(user(r, Some("app:nogroup"), None, None).is_err());
        assert!(user(r, None, Some(-1), None).is_err());
    }
}
