//! Objects encoded once, shared by every response and watch event that sends them.
//!
//! Kubernetes' API server keeps the serialized form next to each object in its watch cache
//! (`cachingObject`) for the same reason: a create is answered with the object, sent to every
//! watcher of its kind and read back by GETs, and serializing the same object for each of them
//! was about a tenth of the server's CPU under the apiserver bench's load.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use kube_core::object::DynamicObject;

/// The JSON of objects the store shares ([`Store::get_shared`](kube_core::store::Store) and the
/// others return the store's own `Arc`). Watch events are framed around it as they are sent
/// (see [`watch`](crate::streaming::watch)).
///
/// Split into shards by address, so that the 64 watchers of the apiserver bench, each looking
/// up every event's object, and the writers adding objects rarely wait for one another, and
/// a shard's sweep holds up only its own lookups.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    shards: [Mutex<Objects>; SHARDS],
}

const SHARDS: usize = 16;

/// Each entry holds a `Weak` to its object. While it does, the object's allocation stays, so
/// its address names it alone; and the object cannot change in place (`Arc::get_mut` fails
/// while a `Weak` exists and `Arc::make_mut` moves the value to a new allocation), so the JSON
/// stays true. Entries whose objects are gone are swept when the map has doubled.
#[derive(Debug, Default)]
struct Objects {
    by_address: HashMap<usize, (Weak<DynamicObject>, Bytes), BuildHasherDefault<AddressHasher>>,
    /// Total JSON bytes held.
    bytes: usize,
    /// How many entries to allow before the next sweep.
    sweep_at: usize,
}

/// Entries of a shard before its first sweep.
const FIRST_SWEEP_AT: usize = 256;
/// JSON a shard keeps at most; past it (after a sweep) the shard starts over.
const MAX_SHARD_BYTES: usize = (1 << 30) / SHARDS;

/// Hashes an allocation's address: a multiply spreads its bits (allocations are aligned, so
/// the low bits say little). Addresses are the allocator's, not a client's, so a keyed hash
/// buys nothing here.
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(SPREAD);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64).wrapping_mul(SPREAD);
    }
}

/// 2^64 divided by the golden ratio: multiplying by it spreads close addresses apart.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

fn shard_of(address: usize) -> usize {
    // The top bits of the spread address, which the map's own use of the hash (its low bits
    // pick the bucket, the top seven the tag) uses least.
    ((address as u64).wrapping_mul(SPREAD) >> 40) as usize % SHARDS
}

impl Encoded {
    /// The object's JSON, encoded at most once while the store shares it.
    pub(crate) fn object(&self, object: &Arc<DynamicObject>) -> Result<Bytes, serde_json::Error> {
        let address = Arc::as_ptr(object) as usize;
        let shard = &self.shards[shard_of(address)];
        if let Ok(objects) = shard.lock()
            && let Some((_, json)) = objects.by_address.get(&address)
        {
            return Ok(json.clone());
        }
        // Encoded without the lock; two first readers may both encode, and both are right.
        let json = encode(object)?;
        if let Ok(mut objects) = shard.lock() {
            objects.insert(address, object, json.clone());
        }
        Ok(json)
    }
}

thread_local! {
    /// Where objects are encoded: it has grown to the largest object this thread encoded, so
    /// encoding does not grow a fresh buffer from 128 bytes by doubling (six reallocations and
    /// copies for a 2.4 KB pod), and the cache keeps exactly the JSON's bytes.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers past this size are not kept between encodings.
const SCRATCH_KEPT: usize = 1 << 20;

fn encode(object: &DynamicObject) -> Result<Bytes, serde_json::Error> {
    SCRATCH.with(|scratch| {
        let Ok(mut buffer) = scratch.try_borrow_mut() else {
            return serde_json::to_vec(object).map(Bytes::from);
        };
        buffer.clear();
        serde_json::to_writer(&mut *buffer, object)?;
        let json = Bytes::copy_from_slice(&buffer);
        if buffer.capacity() > SCRATCH_KEPT {
            *buffer = Vec::new();
        }
        Ok(json)
    })
}

impl Objects {
    fn insert(&mut self, address: usize, object: &Arc<DynamicObject>, json: Bytes) {
        if self.by_address.len() >= self.sweep_at.max(FIRST_SWEEP_AT) {
            self.sweep();
        }
        self.bytes += json.len();
        if let Some((_, old)) = self
            .by_address
            .insert(address, (Arc::downgrade(object), json))
        {
            self.bytes -= old.len();
        }
    }

    /// Drops the entries of objects nobody holds any more; starts over if what is left is
    /// still over the byte budget.
    fn sweep(&mut self) {
        let mut bytes = 0;
        self.by_address.retain(|_, (object, json)| {
            let live = object.strong_count() > 0;
            if live {
                bytes += json.len();
            }
            live
        });
        self.bytes = bytes;
        if self.bytes > MAX_SHARD_BYTES {
            self.by_address.clear();
            self.bytes = 0;
        }
        self.sweep_at = self.by_address.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, revision: u64) -> Arc<DynamicObject> {
        let mut pod = DynamicObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            ..DynamicObject::default()
        };
        pod.metadata.name = Some(name.into());
        pod.metadata.resource_version = Some(revision.to_string());
        pod.data
            .insert("spec".into(), serde_json::json!({"nodeName": "n1"}));
        Arc::new(pod)
    }

    #[test]
    fn an_object_encodes_as_serde_does_and_once() {
        let encoded = Encoded::default();
        let object = pod("a", 7);
        let json = encoded.object(&object).unwrap();
        assert_eq!(json, serde_json::to_vec(object.as_ref()).unwrap());
        let again = encoded.object(&object).unwrap();
        assert_eq!(
            again.as_ptr(),
            json.as_ptr(),
            "the same bytes, not a second encoding"
        );
    }

    #[test]
    fn a_new_version_of_an_object_is_encoded_anew() {
        let encoded = Encoded::default();
        let first = pod("a", 1);
        let before = encoded.object(&first).unwrap();
        // What a client does to change an object it got from the store: make_mut copies it
        // to a new allocation because the cache holds a Weak to the old one.
        let mut second = first.clone();
        Arc::make_mut(&mut second).metadata.resource_version = Some("2".into());
        let after = encoded.object(&second).unwrap();
        assert_ne!(before, after);
        assert_eq!(after, serde_json::to_vec(second.as_ref()).unwrap());
        assert_eq!(encoded.object(&first).unwrap(), before);
    }

    #[test]
    fn entries_of_dropped_objects_are_swept() {
        let encoded = Encoded::default();
        let kept = pod("kept", 1);
        encoded.object(&kept).unwrap();
        for i in 0..3 * FIRST_SWEEP_AT * SHARDS {
            let gone = pod(&format!("p{i}"), i as u64 + 2);
            encoded.object(&gone).unwrap();
        }
        let kept_address = Arc::as_ptr(&kept) as usize;
        for (i, shard) in encoded.shards.iter().enumerate() {
            let objects = shard.lock().unwrap();
            assert!(objects.by_address.len() <= FIRST_SWEEP_AT + 1);
            assert_eq!(
                objects.by_address.contains_key(&kept_address),
                i == shard_of(kept_address)
            );
            let held: usize = objects.by_address.values().map(|(_, j)| j.len()).sum();
            assert_eq!(objects.bytes, held);
        }
    }
}
