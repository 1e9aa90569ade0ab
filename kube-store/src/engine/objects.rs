//! [`KindObjects`]: the current objects of one kind, found by key in a hash map and listed in
//! key order from a separate ordered set of keys.
//!
//! Every write looks its object up (to prepare against it, then to check it is still current)
//! and every get does too; a B-tree lookup compares the key's strings at each level, and those
//! comparisons were a tenth of the in-memory store's write path. Updates, the common write,
//! replace a value in the hash map and leave the ordered keys alone; only creates and deletes
//! touch both.
//!
//! The map hashes keys with aHash (seeded at random per map, as std's SipHash is, so names
//! chosen to collide are no cheaper to attack with), several times faster than SipHash on
//! short names: a pod's namespace and name are hashed by every get and every write.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use kube_core::object::{DynamicObject, ObjectKey};

/// The current objects of one kind.
#[derive(Debug, Default)]
pub(crate) struct KindObjects {
    by_key: HashMap<ObjectKey, Arc<DynamicObject>, ahash::RandomState>,
    /// The same keys, ordered (namespace, then name) for lists and their continue tokens.
    order: BTreeSet<ObjectKey>,
}

impl KindObjects {
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<&Arc<DynamicObject>> {
        self.by_key.get(key)
    }

    /// Sets the object at `key`, as a create or an update.
    pub(crate) fn insert(&mut self, key: &ObjectKey, object: Arc<DynamicObject>) {
        match self.by_key.get_mut(key) {
            Some(current) => *current = object,
            None => {
                self.by_key.insert(key.clone(), object);
                self.order.insert(key.clone());
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &ObjectKey) {
        if self.by_key.remove(key).is_some() {
            self.order.remove(key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Objects from `lower` on, in key order.
    pub(crate) fn range(
        &self,
        lower: Bound<ObjectKey>,
    ) -> impl Iterator<Item = (&ObjectKey, &Arc<DynamicObject>)> {
        self.order
            .range((lower, Bound::Unbounded))
            .filter_map(|key| Some((key, self.by_key.get(key)?)))
    }

    /// Every object, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<DynamicObject>)> {
        self.range(Bound::Unbounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> Arc<DynamicObject> {
        let mut o = DynamicObject::default();
        o.metadata.name = Some(name.into());
        Arc::new(o)
    }

    #[test]
    fn lists_in_key_order_and_updates_in_place() {
        let mut objects = KindObjects::default();
        for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y")] {
            objects.insert(&ObjectKey::namespaced(ns, name), object(name));
        }
        objects.insert(&ObjectKey::namespaced("a", "z"), object("z2"));
        let names: Vec<_> = objects
            .iter()
            .map(|(k, o)| (k.to_string(), o.metadata.name.clone().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("a/y".to_string(), "y".to_string()),
                ("a/z".into(), "z2".into()),
                ("b/x".into(), "x".into())
            ]
        );
        objects.remove(&ObjectKey::namespaced("a", "y"));
        let after: Vec<_> = objects
            .range(Bound::Excluded(ObjectKey::namespaced("a", "z")))
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(after, ["b/x"]);
        assert_eq!(objects.len(), 2);
        assert!(objects.get(&ObjectKey::namespaced("a", "y")).is_none());
    }
}
