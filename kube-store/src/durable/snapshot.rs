//! Snapshots: the whole state at one revision, written atomically (temp file, fsync, rename,
//! fsync of the directory), so the log can be truncated.
//!
//! Format: a JSON header line, one JSON [`Record`] line per object, and a last line holding the
//! CRC-32 of everything before it.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::Record;
use crate::engine::State;

#[derive(Serialize, Deserialize)]
struct Header {
    revision: u64,
    compacted: u64,
    objects: usize,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    crc32: u32,
}

pub(crate) const FILE: &str = "snapshot";

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes `state` as the directory's snapshot.
pub(crate) fn write(dir: &Path, state: &State) -> io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let mut hasher = crc32fast::Hasher::new();
    let mut out = BufWriter::new(File::create(&tmp)?);
    let mut line = |value: &dyn erased::Json, out: &mut BufWriter<File>| -> io::Result<()> {
        let mut bytes = value.to_json()?;
        bytes.push(b'\n');
        hasher.update(&bytes);
        out.write_all(&bytes)
    };
    let count = state.objects.values().map(|m| m.len()).sum();
    line(
        &Header {
            revision: state.revision,
            compacted: state.revision,
            objects: count,
        },
        &mut out,
    )?;
    for (kind, objects) in &state.objects {
        for (key, object) in objects.iter() {
            let record = Record {
                revision: object.revision().unwrap_or(0),
                group: kind.group.to_string(),
                kind: kind.kind.to_string(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                object: Some((**object).clone()),
            };
            line(&record, &mut out)?;
        }
    }
    let trailer = serde_json::to_vec(&Trailer {
        crc32: hasher.finalize(),
    })?;
    out.write_all(&trailer)?;
    out.write_all(b"\n")?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

/// Reads the directory's snapshot, if there is one: the state at its revision (no history).
pub(crate) fn read(dir: &Path) -> io::Result<Option<State>> {
    let file = match File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        lines.push(line?);
    }
    let Some(trailer) = lines.pop() else {
        return Err(invalid("snapshot is empty"));
    };
    let trailer: Trailer =
        serde_json::from_slice(&trailer).map_err(|e| invalid(format!("snapshot trailer: {e}")))?;
    let mut hasher = crc32fast::Hasher::new();
    for line in &lines {
        hasher.update(line);
        hasher.update(b"\n");
    }
    if hasher.finalize() != trailer.crc32 {
        return Err(invalid("snapshot checksum mismatch"));
    }
    let mut lines = lines.into_iter();
    let header: Header = lines
        .next()
        .ok_or_else(|| invalid("snapshot has no header"))
        .and_then(|l| {
            serde_json::from_slice(&l).map_err(|e| invalid(format!("snapshot header: {e}")))
        })?;
    let mut state = State {
        revision: header.revision,
        compacted: header.compacted,
        ..State::default()
    };
    for line in lines {
        let record: Record =
            serde_json::from_slice(&line).map_err(|e| invalid(format!("snapshot record: {e}")))?;
        if let Some(object) = record.object.clone() {
            state
                .objects
                .entry(record.group_kind())
                .or_default()
                .insert(&record.key(), std::sync::Arc::new(object));
        }
    }
    if state.objects.values().map(|m| m.len()).sum::<usize>() != header.objects {
        return Err(invalid("snapshot object count mismatch"));
    }
    Ok(Some(state))
}

/// Serialization behind a trait object, so one closure can write headers and records.
mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> std::io::Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> std::io::Result<Vec<u8>> {
            Ok(serde_json::to_vec(self)?)
        }
    }
}
