//! The log's records: one committed change each, framed as `[len u32][crc32 u32][payload]`
//! (little-endian), payload JSON. A record whose length runs past the end of the file or whose
//! checksum does not match marks the torn tail of a crash.

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use serde::{Deserialize, Serialize};

/// One change as written to the log: the key and the object after it (`None` for a delete).
/// Written from a borrowed object (`Record<&DynamicObject>`), read back owned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record<O = DynamicObject> {
    pub(crate) revision: u64,
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) object: Option<O>,
}

impl<O> Record<O> {
    pub(crate) fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group.clone(), self.kind.clone())
    }

    pub(crate) fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

const HEADER: usize = 8;

/// Appends the framed record to `out`.
pub(crate) fn encode<O: Serialize>(
    record: &Record<O>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let payload = serde_json::to_vec(record)?;
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes records from the start of `bytes`. Returns the records and the length of the valid
/// prefix; anything after it is a torn or corrupted tail.
pub(crate) fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut offset = 0;
    while bytes.len() - offset >= HEADER {
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let len = word(offset) as usize;
        let crc = word(offset + 4);
        let start = offset + HEADER;
        let Some(end) = start.checked_add(len).filter(|end| *end <= bytes.len()) else {
            break;
        };
        let payload = &bytes[start..end];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
        offset = end;
    }
    (records, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revision: u64) -> Record {
        Record {
            revision,
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: format!("cm{revision}"),
            object: None,
        }
    }

    #[test]
    fn torn_and_corrupted_tails_are_cut() {
        let mut bytes = Vec::new();
        encode(&record(1), &mut bytes).unwrap();
        encode(&record(2), &mut bytes).unwrap();
        let whole = bytes.len();
        let (records, valid) = decode_all(&bytes);
        assert_eq!((records.len(), valid), (2, whole));

        // Torn: the last record is cut short.
        let (records, valid) = decode_all(&bytes[..whole - 3]);
        assert_eq!(records.len(), 1);
        assert!(valid < whole - 3);

        // Corrupted: a flipped byte in the second payload.
        let mut flipped = bytes.clone();
        flipped[whole - 2] ^= 0xff;
        let (records, valid) = decode_all(&flipped);
        assert_eq!(records.len(), 1);
        assert_eq!(decode_all(&bytes[..valid]).1, valid);

        // A garbage length never reads out of bounds.
        let mut garbage = bytes.clone();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1]);
        assert_eq!(decode_all(&garbage).1, whole);
    }
}
