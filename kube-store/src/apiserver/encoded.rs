//! Objects and watch events encoded once, shared by every response that sends them.
//!
//! Kubernetes' API server keeps the serialized form next to each object in its watch cache
//! (`cachingObject`) for the same reason: a create is answered with the object, sent to every
//! watcher of its kind and read back by GETs, and serializing the same object for each of them
//! was about a tenth of the server's CPU under the apiserver bench's load.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use kube_core::object::DynamicObject;

/// The JSON of objects the store shares ([`Store::get_shared`](kube_core::store::Store) and the
/// others return the store's own `Arc`), and of the watch events made from them.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    objects: Mutex<Objects>,
    events: Mutex<Events>,
}

/// Each entry holds a `Weak` to its object. While it does, the object's allocation stays, so
/// its address names it alone; and the object cannot change in place (`Arc::get_mut` fails
/// while a `Weak` exists and `Arc::make_mut` moves the value to a new allocation), so the JSON
/// stays true. Entries whose objects are gone are swept when the map has doubled.
#[derive(Debug, Default)]
struct Objects {
    by_address: HashMap<usize, (Weak<DynamicObject>, Bytes)>,
    /// Total JSON bytes held.
    bytes: usize,
    /// How many entries to allow before the next sweep.
    sweep_at: usize,
}

/// Entries before the first sweep.
const FIRST_SWEEP_AT: usize = 4096;
/// JSON kept at most; past it (after a sweep) the cache starts over.
const MAX_OBJECT_BYTES: usize = 1 << 30;

#[derive(Debug, Default)]
struct Events {
    by_change: HashMap<(u64, &'static str), Bytes>,
    order: VecDeque<(u64, &'static str)>,
}

/// How many encoded watch events are kept: enough for every watcher to catch up on a burst.
const EVENTS_CAPACITY: usize = 4096;

impl Encoded {
    /// The object's JSON, encoded at most once while the store shares it.
    pub(crate) fn object(&self, object: &Arc<DynamicObject>) -> Result<Bytes, serde_json::Error> {
        let address = Arc::as_ptr(object) as usize;
        if let Ok(objects) = self.objects.lock()
            && let Some((_, json)) = objects.by_address.get(&address)
        {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(object.as_ref())?);
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(address, object, json.clone());
        }
        Ok(json)
    }

    /// A watch event's line, `{"type":..,"object":..}\n`, encoded once per change and event
    /// type for all the watchers that send it.
    pub(crate) fn event(&self, event_type: &'static str, object: &Arc<DynamicObject>) -> Bytes {
        let Some(revision) = object.revision() else {
            return self.event_line(event_type, object);
        };
        let key = (revision, event_type);
        if let Ok(events) = self.events.lock()
            && let Some(line) = events.by_change.get(&key)
        {
            return line.clone();
        }
        let line = self.event_line(event_type, object);
        if let Ok(mut events) = self.events.lock()
            && events.by_change.insert(key, line.clone()).is_none()
        {
            events.order.push_back(key);
            while events.order.len() > EVENTS_CAPACITY {
                if let Some(old) = events.order.pop_front() {
                    events.by_change.remove(&old);
                }
            }
        }
        line
    }

    fn event_line(&self, event_type: &str, object: &Arc<DynamicObject>) -> Bytes {
        // An object that cannot be encoded (it came through the store, so it was decoded from
        // JSON once) leaves an empty line rather than a broken event.
        let Ok(json) = self.object(object) else {
            return Bytes::new();
        };
        let mut line = Vec::with_capacity(json.len() + event_type.len() + 24);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(event_type.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&json);
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }
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
        if self.bytes > MAX_OBJECT_BYTES {
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
    fn an_object_and_its_events_encode_as_serde_does() {
        let encoded = Encoded::default();
        let object = pod("a", 7);
        let json = encoded.object(&object).unwrap();
        assert_eq!(json, serde_json::to_vec(object.as_ref()).unwrap());
        let line = encoded.event("ADDED", &object);
        let expected = format!(
            "{}\n",
            serde_json::json!({"type": "ADDED", "object": &*object})
        );
        let decoded: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let wanted: serde_json::Value = serde_json::from_str(&expected).unwrap();
        assert_eq!(decoded, wanted);
        assert!(line.starts_with(b"{\"type\":\"ADDED\",\"object\":{"));
        assert!(line.ends_with(b"}\n"));
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
        for i in 0..3 * FIRST_SWEEP_AT {
            let gone = pod(&format!("p{i}"), i as u64 + 2);
            encoded.object(&gone).unwrap();
        }
        let objects = encoded.objects.lock().unwrap();
        assert!(objects.by_address.len() <= FIRST_SWEEP_AT + 1);
        assert!(
            objects
                .by_address
                .contains_key(&(Arc::as_ptr(&kept) as usize))
        );
        let held: usize = objects.by_address.values().map(|(_, j)| j.len()).sum();
        assert_eq!(objects.bytes, held);
    }
}
