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

/// One image of an OCI image-layout archive written by [`oci_archive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveImage {
    /// Full reference, stored as `io.containerd.image.name`, e.g.
    /// `docker.io/library/busybox:latest`.
    pub name: String,
    /// The image config's `Cmd` (what runs when a container sets no command).
    pub cmd: Vec<String>,
}

/// Writes an OCI image-layout tar at `out` (what `ctr images import` takes): one gzip layer
/// holding `rootfs`, and per entry of `images` a config and manifest sharing it.
pub fn oci_archive(rootfs: &Path, images: &[ArchiveImage], out: &Path) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    let digest = |bytes: &[u8]| format!("sha256:{:x}", Sha256::digest(bytes));

    // The layer: the rootfs as an uncompressed tar (its digest is the diff ID), then gzipped.
    let mut layer_tar = tar::Builder::new(Vec::new());
    layer_tar.follow_symlinks(false);
    layer_tar.append_dir_all(".", rootfs)?;
    let layer_tar = layer_tar.into_inner()?;
    let diff_id = digest(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &layer_tar)?;
    let layer = gz.finish()?;
    let layer_digest = digest(&layer);

    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for image in images {
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": image.cmd,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        })
        .to_string()
        .into_bytes();
        let tag = image.name.rsplit_once(':').map_or("latest", |(_, t)| t);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        blobs.push((digest(&config), config));
        blobs.push((digest(&manifest), manifest));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests}).to_string();

    let mut archive = tar::Builder::new(std::fs::File::create(out)?);
    let mut add = |path: &str, data: &[u8]| -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, path, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", index.as_bytes())?;
    let mut seen = std::collections::BTreeSet::new();
    for (d, data) in &blobs {
        if seen.insert(d.clone()) {
            let hex = d.trim_start_matches("sha256:");
            add(&format!("blobs/sha256/{hex}"), data)?;
        }
    }
    archive.into_inner()?;
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Unpacks image `reference` from an OCI image-layout tar (as [`oci_archive`] writes, or
/// `skopeo`/`buildah` export) into the directory `dest`: its layers in order, whiteouts
/// applied. The image is the manifest annotated with `reference` as
/// `io.containerd.image.name` or `org.opencontainers.image.ref.name`, or the only one.
pub fn unpack_oci_archive(archive: &Path, reference: &str, dest: &Path) -> io::Result<()> {
    use std::io::Read;
    // Small test images: reading the archive into memory keeps blob lookup simple.
    let mut files = std::collections::HashMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(path, data);
    }
    let json = |path: &str| -> io::Result<serde_json::Value> {
        let data = files
            .get(path)
            .ok_or_else(|| invalid(format!("{path} is missing from the archive")))?;
        serde_json::from_slice(data).map_err(|e| invalid(format!("{path}: {e}")))
    };
    let blob = |digest: &str| format!("blobs/{}", digest.replacen(':', "/", 1));
    let index = json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let names = |m: &serde_json::Value| {
        let a = &m["annotations"];
        [
            a["io.containerd.image.name"].as_str().map(str::to_string),
            a["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_string),
        ]
    };
    let chosen = manifests
        .iter()
        .find(|m| names(m)[0].as_deref() == Some(reference))
        .or_else(|| {
            manifests
                .iter()
                .find(|m| matches!(names(m)[1].as_deref(), Some(n) if n == reference || n == tag))
        })
        .or(if manifests.len() == 1 {
            manifests.first()
        } else {
            None
        })
        .ok_or_else(|| invalid(format!("no image {reference:?} in {}", archive.display())))?;
    let digest = chosen["digest"].as_str().unwrap_or_default();
    let manifest = json(&blob(digest))?;
    std::fs::create_dir_all(dest)?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"].as_str().unwrap_or_default();
        let data = files
            .get(&blob(digest))
            .ok_or_else(|| invalid(format!("layer {digest} is missing")))?;
        let media = layer["mediaType"].as_str().unwrap_or_default();
        let reader: Box<dyn Read> = if media.contains("gzip") {
            Box::new(flate2::read::GzDecoder::new(&data[..]))
        } else {
            Box::new(&data[..])
        };
        apply_layer(reader, dest)?;
    }
    Ok(())
}

/// Extracts one layer over `dest`, applying OCI whiteouts (`.wh.<name>` deletes `<name>`,
/// `.wh..wh..opq` empties its directory).
fn apply_layer(reader: impl io::Read, dest: &Path) -> io::Result<()> {
    let mut layer = tar::Archive::new(reader);
    layer.set_preserve_permissions(true);
    for entry in layer.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            continue;
        }
        match name.as_deref() {
            Some(".wh..wh..opq") => {
                for child in std::fs::read_dir(dest.join(&parent))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    remove_any(&child.path())?;
                }
            }
            Some(n) if n.starts_with(".wh.") => {
                remove_any(&dest.join(&parent).join(&n[4..]))?;
            }
            _ => {
                // `unpack_in` refuses paths that would land outside `dest`.
                entry.unpack_in(dest)?;
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    let result = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_round_trips_to_a_root_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::write(rootfs.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", rootfs.join("bin/hi")).unwrap();
        let archive = dir.path().join("image.tar");
        let image = |name: &str| ArchiveImage {
            name: name.into(),
            cmd: vec!["hello".into()],
        };
        oci_archive(
            &rootfs,
            &[image("example.com/a:1"), image("example.com/b:2")],
            &archive,
        )
        .unwrap();
        let out = dir.path().join("out");
        unpack_oci_archive(&archive, "example.com/b:2", &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("bin/hello")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read_link(out.join("bin/hi")).unwrap(),
            Path::new("hello")
        );
        assert!(unpack_oci_archive(&archive, "example.com/c:3", &dir.path().join("x")).is_err());
    }
}
