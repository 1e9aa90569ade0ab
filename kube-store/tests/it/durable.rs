//! What only the durable store does: survive restarts and crashes, refuse a second opener,
//! cut torn log tails, snapshot the log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{ListOptions, Preconditions, Store, StoreError, WatchOptions};
use kube_store::{DurableConfig, DurableStore};
use serde_json::json;

const CM: GroupKind = GroupKind::from_static("", "ConfigMap");

fn config_map(name: &str, value: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"value": value}
    }))
    .unwrap()
}

fn value_of(o: &DynamicObject) -> String {
    o.data["data"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::namespaced("default", name)
}

#[tokio::test]
async fn reopen_keeps_objects_revisions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let (deleted_rev, last) = {
        let s = DurableStore::open(dir.path()).unwrap();
        s.create(config_map("a", "1")).await.unwrap();
        let b = s.create(config_map("b", "1")).await.unwrap();
        let mut b2 = b.clone();
        b2.data["data"]["value"] = json!("2");
        let last = s.update(b2).await.unwrap();
        let gone = s
            .delete(&CM, &key("a"), &Preconditions::default())
            .await
            .unwrap();
        (gone.revision().unwrap(), last)
    };
    let s = DurableStore::open(dir.path()).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), deleted_rev);
    assert!(s.get(&CM, &key("a")).await.unwrap_err().is_not_found());
    assert_eq!(s.get(&CM, &key("b")).await.unwrap(), last);
    // A watch can resume from before the restart: the log is the history.
    let mut w = s
        .watch(&CM, None, &WatchOptions::from_revision(1))
        .await
        .unwrap();
    let mut revisions = Vec::new();
    for _ in 0..3 {
        revisions.push(w.next().await.unwrap().unwrap().revision().unwrap());
    }
    assert_eq!(revisions, [2, 3, 4]);
    let next = s.create(config_map("c", "1")).await.unwrap();
    assert_eq!(next.revision(), Some(deleted_rev + 1));
}

#[tokio::test]
async fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = DurableStore::open(dir.path()).unwrap();
    match DurableStore::open(dir.path()) {
        Err(StoreError::Invalid(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("expected the lock to refuse, got {other:?}"),
    }
    drop(first);
    DurableStore::open(dir.path()).expect("the lock is released with the store");
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = DurableStore::open(dir.path()).unwrap();
        for i in 0..5 {
            s.create(config_map(&format!("o{i}"), "v")).await.unwrap();
        }
    }
    let log = dir.path().join("log");
    let len = std::fs::metadata(&log).unwrap().len();
    // A crash mid-append: the last record is cut short, then garbage.
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[0xde, 0xad, 0xbe])
        .unwrap();
    let s = DurableStore::open(dir.path()).unwrap();
    let names: Vec<String> = s
        .list(&CM, None, &ListOptions::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.key().name)
        .collect();
    assert_eq!(names, ["o0", "o1", "o2", "o3"]);
    let next = s.create(config_map("after", "v")).await.unwrap();
    assert_eq!(
        next.revision(),
        Some(5),
        "revisions continue from the last intact record"
    );
    drop(s);
    let s = DurableStore::open(dir.path()).unwrap();
    assert_eq!(
        s.list(&CM, None, &ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        5
    );
}

#[tokio::test]
async fn the_log_is_snapshotted_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let config = DurableConfig::default().max_log_bytes(16 * 1024);
    {
        let s = DurableStore::open_with(dir.path(), config.clone()).unwrap();
        for i in 0..200 {
            let name = format!("o{}", i % 20);
            match s.create(config_map(&name, &i.to_string())).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {
                    let mut o = s.get(&CM, &key(&name)).await.unwrap();
                    o.data["data"]["value"] = json!(i.to_string());
                    s.update(o).await.unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let log_len = std::fs::metadata(dir.path().join("log")).unwrap().len();
    assert!(
        log_len <= 16 * 1024 + 4096,
        "log was truncated after snapshots: {log_len} bytes"
    );
    assert!(dir.path().join("snapshot").exists());
    let s = DurableStore::open_with(dir.path(), config).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 200);
    let items = s
        .list(&CM, None, &ListOptions::default())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 20);
    assert_eq!(value_of(&s.get(&CM, &key("o19")).await.unwrap()), "199");
}

const CRASH_DIR: &str = "KUBE_STORE_CRASH_DIR";

/// The writer half of the crash test: runs only when the crash test starts this binary as a
/// child with `KUBE_STORE_CRASH_DIR` set (and passes trivially otherwise). Several writers
/// create and update objects and print `ack <name> <revision> <value>` after each
/// acknowledgement, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_writer_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let store = Arc::new(
        DurableStore::open_with(&dir, DurableConfig::default().max_log_bytes(256 * 1024)).unwrap(),
    );
    let seed = std::process::id();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let name = format!("w{writer}-{}", i % 16);
                let value = format!("{seed}-{writer}-{i}");
                let result = match store.get(&CM, &key(&name)).await {
                    Ok(mut o) => {
                        o.data["data"]["value"] = json!(value);
                        o.metadata.resource_version = None;
                        store.update(o).await
                    }
                    Err(_) => store.create(config_map(&name, &value)).await,
                };
                let o = result.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {name} {} {value}", o.revision().unwrap()).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Kills a writing child with SIGKILL at random moments, round after round; after each reopen,
/// every acknowledged write is there with its revision, and the store is intact.
/// `KUBE_STORE_CRASH_ROUNDS` sets the number of rounds (default 4; the stress run uses 300).
#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let rounds: usize = std::env::var("KUBE_STORE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut total_acks = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "durable::crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Let it write for a random while (it needs a moment to start), then kill it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(150 + u64::from(nanos % 400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 4 && parts[0] == "ack" {
                let revision: u64 = parts[2].parse().unwrap();
                let entry = acked
                    .entry(parts[1].to_string())
                    .or_insert((0, String::new()));
                if revision > entry.0 {
                    *entry = (revision, parts[3].to_string());
                }
                total_acks += 1;
            }
        }
        let store = DurableStore::open(dir.path()).unwrap();
        let max_acked = acked.values().map(|(r, _)| *r).max().unwrap_or(0);
        assert!(
            store.current_revision().await.unwrap() >= max_acked,
            "round {round}: revision went back"
        );
        for (name, (revision, value)) in &acked {
            let stored = store
                .get(&CM, &key(name))
                .await
                .unwrap_or_else(|e| panic!("round {round}: acked {name} lost: {e}"));
            let stored_revision = stored.revision().unwrap();
            assert!(
                stored_revision >= *revision,
                "round {round}: {name} went back from {revision} to {stored_revision}"
            );
            if stored_revision == *revision {
                assert_eq!(
                    &value_of(&stored),
                    value,
                    "round {round}: {name} at {revision}"
                );
            }
        }
    }
    assert!(total_acks > 0, "the child acknowledged writes");
}
