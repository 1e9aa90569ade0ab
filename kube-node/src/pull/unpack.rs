//! Layers applied onto a directory, bottom first: the image's flattened root filesystem.
//! OCI whiteouts are honoured: `.wh.NAME` deletes `NAME` from the layers below, and
//! `DIR/.wh..wh..opq` hides everything lower layers put in `DIR`.

use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The prefix of whiteout entries.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`…layer.v1.tar`, Docker's `…rootfs.diff.tar`).
    None,
    /// gzip (`+gzip`, Docker's `…tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// The compression of a layer of `media_type`, or `None` if it is not a layer type this
    /// puller knows (e.g. encrypted or foreign layers).
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// A decompressing reader over `blob`.
fn decoder<'a>(blob: impl Read + 'a, compression: Compression) -> io::Result<Box<dyn Read + 'a>> {
    let blob = BufReader::with_capacity(256 * 1024, blob);
    Ok(match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(blob)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?,
        ),
    })
}

/// Applies the layer `blob` (compressed as `compression`) onto `dest`; returns the bytes of
/// regular files it wrote. Ownership is kept when running as root.
pub fn apply_layer(blob: impl Read, compression: Compression, dest: &Path) -> io::Result<u64> {
    apply_tar(decoder(blob, compression)?, dest)
}

/// Decompresses `blob` on a thread of its own, ahead of the reader (at most a few MiB
/// ahead): layers decompress in parallel while they are applied one after the other.
pub fn decompress_ahead(
    blob: impl Read + Send + 'static,
    compression: Compression,
) -> Box<dyn Read + Send> {
    const CHUNK: usize = 256 * 1024;
    if compression == Compression::None {
        return Box::new(BufReader::with_capacity(CHUNK, blob));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    let spawned = std::thread::Builder::new()
        .name("layer-decompress".into())
        .spawn(move || {
            let mut reader = match decoder(blob, compression) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            loop {
                let mut chunk = vec![0u8; CHUNK];
                match read_full(&mut reader, &mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        // A gone receiver: the layer is no longer wanted.
                        if tx.send(Ok(chunk)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
    match spawned {
        Ok(_) => Box::new(PipeReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }),
        Err(e) => Box::new(FailedReader(Some(e))),
    }
}

/// Reads until `buf` is full or the end.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The reading end of [`decompress_ahead`].
struct PipeReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decompressor finished.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader failing once with the error a decompressor thread could not be started with.
struct FailedReader(Option<io::Error>);

impl Read for FailedReader {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("decompressor failed")))
    }
}

/// Applies an uncompressed layer tar onto `dest` (see [`apply_layer`]).
pub fn apply_tar(tar: impl Read, dest: &Path) -> io::Result<u64> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    // What this layer itself created: an opaque marker hides only the lower layers' entries.
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut written = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(path) = clean_path(&entry.path()?) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE {
            clear_dir(&dest.join(&parent), &parent, &created)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            remove_any(&dest.join(&parent).join(hidden))?;
            continue;
        }
        let target = dest.join(&path);
        let kind = entry.header().entry_type();
        // A new entry replaces what lower layers had there, except directory over directory.
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if !(kind.is_dir() && meta.is_dir()) {
                remove_any(&target)?;
            }
        }
        if kind.is_file() {
            written += entry.header().size().unwrap_or(0);
        }
        entry.unpack_in(dest)?;
        created.insert(path);
    }
    Ok(written)
}

/// `path` relative and without `.`/`..` components (entries escaping the root are skipped).
fn clean_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Removes what `dir` holds, keeping the entries this layer created (`created`, relative
/// paths; `rel` is `dir` relative to the root).
fn clear_dir(dir: &Path, rel: &Path, created: &HashSet<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if created.contains(&child) {
            // Created by this layer; its own lower-layer children still go.
            if entry.file_type()?.is_dir() {
                clear_dir(&entry.path(), &child, created)?;
            }
            continue;
        }
        remove_any(&entry.path())?;
    }
    Ok(())
}

/// Removes a file, link or directory tree; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(c.len() as u64);
                    b.append_data(&mut h, path, c.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn whiteouts_delete_and_opaque_dirs_hide_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lower = layer(&[
            ("a", None),
            ("a/gone.txt", Some("x")),
            ("a/kept.txt", Some("k")),
            ("d", None),
            ("d/sub", None),
            ("d/sub/x", Some("x")),
            ("o", None),
            ("o/old", Some("old")),
            ("f", Some("file")),
        ]);
        assert_eq!(
            apply_layer(&gzip(&lower)[..], Compression::Gzip, root).unwrap(),
            10
        );
        let upper = layer(&[
            ("a/.wh.gone.txt", Some("")),
            ("o/new", Some("new")),
            ("o/.wh..wh..opq", Some("")),
            ("d/.wh.sub", Some("")),
            ("f", None),
            ("f/now-a-dir", Some("y")),
        ]);
        let ahead = decompress_ahead(std::io::Cursor::new(gzip(&upper)), Compression::Gzip);
        apply_tar(ahead, root).unwrap();
        assert!(!root.join("a/gone.txt").exists());
        assert!(!root.join("a/.wh.gone.txt").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("a/kept.txt")).unwrap(),
            "k"
        );
        assert!(!root.join("d/sub").exists());
        assert!(root.join("d").is_dir());
        assert!(!root.join("o/old").exists());
        assert_eq!(std::fs::read_to_string(root.join("o/new")).unwrap(), "new");
        assert!(!root.join("o/.wh..wh..opq").exists());
        assert!(root.join("f/now-a-dir").is_file());
    }

    #[test]
    fn zstd_layers_unpack_and_escaping_paths_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tar = layer(&[("x", Some("zstd!"))]);
        let z = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        apply_layer(&z[..], Compression::Zstd, dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x")).unwrap(),
            "zstd!"
        );
        assert_eq!(clean_path(Path::new("../etc/passwd")), None);
        assert_eq!(
            clean_path(Path::new("/etc/./passwd")),
            Some("etc/passwd".into())
        );
        assert!(apply_layer(&b"not gzip"[..], Compression::Gzip, dir.path()).is_err());
        let bad = decompress_ahead(
            std::io::Cursor::new(b"not gzip".to_vec()),
            Compression::Gzip,
        );
        assert!(apply_tar(bad, dir.path()).is_err());
    }

    #[test]
    fn media_types_map_to_compressions() {
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::of_media_type("application/x-foo"), None);
    }
}
