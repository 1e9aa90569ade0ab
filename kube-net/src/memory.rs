//! [`MemoryProxy`]: a data plane that only remembers what it was told.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kube_core::proxy::{Proxy, ProxyError, ServiceTable, TableChange};
use tokio::sync::watch;

/// How a [`MemoryProxy`] has been fed so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Successful [`Proxy::sync`] calls (full replacements).
    pub full_syncs: u64,
    /// Successful [`Proxy::apply`] calls (batches of increments).
    pub increments: u64,
    /// Changes in those batches.
    pub changes: u64,
    /// Calls that failed because of [`MemoryProxy::fail_next`].
    pub failures: u64,
}

/// A [`Proxy`] that keeps the applied [`ServiceTable`] in memory: the reference data plane for
/// tests and examples, and a model of what a real one must end up with.
///
/// Beyond the trait it reports how it was fed ([`MemoryProxy::stats`]), lets a test wait for a
/// table ([`MemoryProxy::wait_for`]) and injects failures ([`MemoryProxy::fail_next`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use kube_core::object::ObjectKey;
/// use kube_core::proxy::{Proxy, ServiceEntry, TableChange};
/// use kube_net::MemoryProxy;
///
/// let proxy = MemoryProxy::new();
/// let key = ObjectKey::namespaced("default", "web");
/// let entry = ServiceEntry::default();
/// proxy.apply(&[TableChange::Upsert(key.clone(), entry)]).await.unwrap();
/// let table = proxy.wait_for(|t| t.services.contains_key(&key)).await;
/// assert_eq!(table.services.len(), 1);
/// assert_eq!(proxy.stats().increments, 1);
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryProxy {
    table: watch::Sender<ServiceTable>,
    full_syncs: AtomicU64,
    increments: AtomicU64,
    changes: AtomicU64,
    failures: AtomicU64,
    fail_next: AtomicU32,
}

impl Default for MemoryProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProxy {
    /// A proxy with an empty table.
    pub fn new() -> Self {
        Self {
            table: watch::Sender::new(ServiceTable::default()),
            full_syncs: AtomicU64::new(0),
            increments: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fail_next: AtomicU32::new(0),
        }
    }

    /// The applied table now.
    pub fn table(&self) -> ServiceTable {
        self.table.borrow().clone()
    }

    /// How the proxy has been fed.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            full_syncs: self.full_syncs.load(Ordering::SeqCst),
            increments: self.increments.load(Ordering::SeqCst),
            changes: self.changes.load(Ordering::SeqCst),
            failures: self.failures.load(Ordering::SeqCst),
        }
    }

    /// Makes the next `calls` calls to `sync` or `apply` fail without changing the table, as a
    /// broken backend would.
    pub fn fail_next(&self, calls: u32) {
        self.fail_next.store(calls, Ordering::SeqCst);
    }

    /// Waits until the applied table satisfies `predicate` (checked now and after every change)
    /// and returns it. Wrap it in a timeout in tests.
    pub async fn wait_for(&self, mut predicate: impl FnMut(&ServiceTable) -> bool) -> ServiceTable {
        let mut rx = self.table.subscribe();
        match rx.wait_for(|t| predicate(t)).await {
            Ok(table) => table.clone(),
            // Only when the sender is dropped, which `&self` rules out.
            Err(_) => self.table(),
        }
    }

    /// A receiver that sees every new applied table.
    pub fn subscribe(&self) -> watch::Receiver<ServiceTable> {
        self.table.subscribe()
    }

    /// Consumes one injected failure, if any is left.
    fn injected_failure(&self) -> Result<(), ProxyError> {
        let took = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if took {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(ProxyError::Backend(Box::new(std::io::Error::other(
                "injected MemoryProxy failure",
            ))));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Proxy for MemoryProxy {
    async fn sync(&self, table: &ServiceTable) -> Result<(), ProxyError> {
        self.injected_failure()?;
        // Counters first: whoever sees the new table also sees how it got there.
        self.full_syncs.fetch_add(1, Ordering::SeqCst);
        self.table.send_replace(table.clone());
        Ok(())
    }

    async fn apply(&self, changes: &[TableChange]) -> Result<(), ProxyError> {
        self.injected_failure()?;
        self.increments.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(
            u64::try_from(changes.len()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        self.table.send_modify(|t| t.apply(changes));
        Ok(())
    }

    async fn applied(&self) -> Result<ServiceTable, ProxyError> {
        Ok(self.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::object::ObjectKey;

    #[tokio::test]
    async fn injected_failures_leave_the_table_alone() {
        let proxy = MemoryProxy::new();
        proxy.fail_next(1);
        let change = TableChange::Remove(ObjectKey::namespaced("ns", "gone"));
        assert!(proxy.apply(std::slice::from_ref(&change)).await.is_err());
        assert!(proxy.apply(&[change]).await.is_ok());
        assert_eq!(
            proxy.stats(),
            ProxyStats {
                full_syncs: 0,
                increments: 1,
                changes: 1,
                failures: 1
            }
        );
    }
}
