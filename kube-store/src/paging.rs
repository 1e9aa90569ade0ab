//! Continue tokens for paged lists: the revision of the first page and the last key returned.

use kube_core::object::ObjectKey;
use kube_core::store::StoreError;

/// Where a paged list resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continue {
    /// Every page reflects this revision.
    pub(crate) revision: u64,
    /// The last key of the previous page; the next page starts after it.
    pub(crate) after: ObjectKey,
}

impl Continue {
    /// Encodes as `v1:<revision>:<namespace>:<name>` (names and namespaces cannot hold `:`).
    pub(crate) fn encode(&self) -> String {
        format!(
            "v1:{}:{}:{}",
            self.revision,
            self.after.namespace.as_deref().unwrap_or(""),
            self.after.name
        )
    }

    pub(crate) fn decode(token: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::Invalid(format!("continue token {token:?} is malformed"));
        let mut parts = token.splitn(4, ':');
        if parts.next() != Some("v1") {
            return Err(invalid());
        }
        let revision = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(invalid)?;
        let namespace = parts.next().ok_or_else(invalid)?;
        let name = parts.next().ok_or_else(invalid)?;
        Ok(Self {
            revision,
            after: ObjectKey {
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                name: name.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let c = Continue {
            revision: 42,
            after: ObjectKey::namespaced("default", "web-1"),
        };
        assert_eq!(Continue::decode(&c.encode()).unwrap(), c);
        let cluster = Continue {
            revision: 7,
            after: ObjectKey::cluster("n1"),
        };
        assert_eq!(Continue::decode(&cluster.encode()).unwrap(), cluster);
        for bad in ["", "v2:1:a:b", "v1:x:a:b", "v1:1:a"] {
            assert!(
                matches!(Continue::decode(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
