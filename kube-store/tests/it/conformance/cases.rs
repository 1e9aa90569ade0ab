//! The conformance cases: what every `Store` backend must do, written once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::{FieldSelector, Selector};
use kube_core::store::{
    ListOptions, Preconditions, Store, StoreError, WatchEvent, WatchOptions, WatchStream,
};
use serde_json::json;

use super::linearizability::{self, Entry, Op};

const CM: GroupKind = GroupKind::from_static("", "ConfigMap");

fn config_map(ns: &str, name: &str, labels: serde_json::Value, value: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": {"value": value}
    }))
    .unwrap()
}

fn value_of(o: &DynamicObject) -> String {
    o.data["data"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn next(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch stream stays open")
        .expect("no watch error")
}

/// The next event that is not a bookmark.
async fn next_change(w: &mut WatchStream) -> WatchEvent {
    loop {
        match next(w).await {
            WatchEvent::Bookmark { .. } => continue,
            e => return e,
        }
    }
}

pub(crate) async fn crud(s: Arc<dyn Store>) {
    let ns = "crud";
    let created = s.create(config_map(ns, "a", json!({}), "1")).await.unwrap();
    let rv1 = created.revision().unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let key = ObjectKey::namespaced(ns, "a");
    let got = s.get(&CM, &key).await.unwrap();
    assert_eq!(got, created, "get returns what create returned");
    assert!(
        s.create(config_map(ns, "a", json!({}), "2"))
            .await
            .unwrap_err()
            .is_already_exists()
    );

    let mut changed = got.clone();
    changed.data["data"]["value"] = json!("2");
    let updated = s.update(changed).await.unwrap();
    assert!(updated.revision().unwrap() > rv1);
    assert_eq!(value_of(&s.get(&CM, &key).await.unwrap()), "2");
    assert_eq!(updated.metadata.uid, created.metadata.uid);

    let deleted = s
        .delete(&CM, &key, &Preconditions::default())
        .await
        .unwrap();
    assert!(deleted.revision().unwrap() > updated.revision().unwrap());
    assert!(s.get(&CM, &key).await.unwrap_err().is_not_found());
    assert!(
        s.delete(&CM, &key, &Preconditions::default())
            .await
            .unwrap_err()
            .is_not_found()
    );

    let mut generated = config_map(ns, "", json!({}), "g");
    generated.metadata.generate_name = Some("gen-".into());
    let g = s.create(generated).await.unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));

    for bad in [
        config_map(ns, "Bad_Name", json!({}), "x"),
        config_map("", "nons", json!({}), "x"),
    ] {
        assert!(matches!(s.create(bad).await, Err(StoreError::Invalid(_))));
    }
    assert!(s.current_revision().await.unwrap() >= deleted.revision().unwrap());
}

pub(crate) async fn conflicts(s: Arc<dyn Store>) {
    let ns = "conflicts";
    let v1 = s.create(config_map(ns, "a", json!({}), "1")).await.unwrap();
    let mut a = v1.clone();
    a.data["data"]["value"] = json!("2");
    s.update(a).await.unwrap();
    let mut stale = v1.clone();
    stale.data["data"]["value"] = json!("3");
    assert!(
        s.update(stale).await.unwrap_err().is_conflict(),
        "stale resourceVersion conflicts"
    );
    let key = ObjectKey::namespaced(ns, "a");
    let wrong_uid = Preconditions::uid("not-the-uid");
    assert!(
        s.delete(&CM, &key, &wrong_uid)
            .await
            .unwrap_err()
            .is_conflict()
    );
    let mut unconditional = v1.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data["data"]["value"] = json!("4");
    assert_eq!(value_of(&s.update(unconditional).await.unwrap()), "4");
}

pub(crate) async fn watch_order_and_resume(s: Arc<dyn Store>) {
    let ns = "watch";
    let start = s.current_revision().await.unwrap();
    let mut w = s
        .watch(&CM, Some(ns), &WatchOptions::from_revision(start))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..30 {
        let o = s
            .create(config_map(
                ns,
                &format!("o{}", i % 10),
                json!({}),
                &i.to_string(),
            ))
            .await;
        let o = match o {
            Ok(o) => o,
            Err(e) if e.is_already_exists() => {
                let key = ObjectKey::namespaced(ns, format!("o{}", i % 10));
                let mut cur = s.get(&CM, &key).await.unwrap();
                cur.data["data"]["value"] = json!(i.to_string());
                s.update(cur).await.unwrap()
            }
            Err(e) => panic!("{e}"),
        };
        expected.push(o.revision().unwrap());
    }
    // Read some, disconnect, resume from the last revision seen.
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(next_change(&mut w).await.revision().unwrap());
    }
    drop(w);
    let last = *seen.last().unwrap();
    let mut w = s
        .watch(&CM, Some(ns), &WatchOptions::from_revision(last))
        .await
        .unwrap();
    while seen.len() < expected.len() {
        seen.push(next_change(&mut w).await.revision().unwrap());
    }
    assert_eq!(
        seen, expected,
        "every change exactly once, in order, across a reconnect"
    );
    // Deletes arrive too, carrying the deletion's revision.
    let gone = s
        .delete(
            &CM,
            &ObjectKey::namespaced(ns, "o1"),
            &Preconditions::default(),
        )
        .await
        .unwrap();
    match next_change(&mut w).await {
        WatchEvent::Deleted(o) => assert_eq!(o.revision(), gone.revision()),
        e => panic!("expected Deleted, got {e:?}"),
    }
}

pub(crate) async fn compaction(s: Arc<dyn Store>) {
    let ns = "compaction";
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(
            s.create(config_map(ns, &format!("c{i}"), json!({}), "v"))
                .await
                .unwrap()
                .revision()
                .unwrap(),
        );
    }
    let page = s
        .list(&CM, Some(ns), &ListOptions::default().limit(3))
        .await
        .unwrap();
    let token = page.continue_token.clone().expect("a continue token");
    s.compact(revisions[5]).await.unwrap();
    match s
        .watch(&CM, Some(ns), &WatchOptions::from_revision(revisions[2]))
        .await
    {
        Err(StoreError::TooOld { .. }) => {}
        Ok(mut w) => match w.next().await {
            Some(Err(StoreError::TooOld { .. })) => {}
            other => panic!("watch from a compacted revision must be TooOld, got {other:?}"),
        },
        Err(e) => panic!("expected TooOld, got {e}"),
    }
    let mut w = s
        .watch(&CM, Some(ns), &WatchOptions::from_revision(revisions[5]))
        .await
        .unwrap();
    for expected in &revisions[6..] {
        assert_eq!(next_change(&mut w).await.revision(), Some(*expected));
    }
    if page.resource_version < revisions[5] {
        // The first page's revision is gone: the rest of that list cannot be served.
        let err = s
            .list(&CM, Some(ns), &ListOptions::default().continue_from(token))
            .await;
        assert!(matches!(err, Err(StoreError::TooOld { .. })), "{err:?}");
    }
}

pub(crate) async fn selectors(s: Arc<dyn Store>) {
    let ns = "selectors";
    s.create(config_map(
        ns,
        "a",
        json!({"app": "web", "tier": "front"}),
        "1",
    ))
    .await
    .unwrap();
    s.create(config_map(
        ns,
        "b",
        json!({"app": "web", "tier": "back"}),
        "2",
    ))
    .await
    .unwrap();
    s.create(config_map(ns, "c", json!({"app": "db"}), "3"))
        .await
        .unwrap();
    s.create(config_map(
        "selectors-other",
        "d",
        json!({"app": "web"}),
        "4",
    ))
    .await
    .unwrap();
    let names =
        |items: Vec<DynamicObject>| items.into_iter().map(|o| o.key().name).collect::<Vec<_>>();
    let web_front =
        ListOptions::default().labels(Selector::parse("app=web,tier notin (back)").unwrap());
    assert_eq!(
        names(s.list(&CM, Some(ns), &web_front).await.unwrap().items),
        ["a"]
    );
    let by_field = ListOptions::default().fields(FieldSelector::parse("metadata.name!=a").unwrap());
    assert_eq!(
        names(s.list(&CM, Some(ns), &by_field).await.unwrap().items),
        ["b", "c"]
    );

    // A filtered watch sees objects enter and leave its selector.
    let start = s.current_revision().await.unwrap();
    let db = WatchOptions::from_revision(start)
        .filter(ListOptions::default().labels(Selector::parse("app=db").unwrap()));
    let mut w = s.watch(&CM, Some(ns), &db).await.unwrap();
    let mut a = s.get(&CM, &ObjectKey::namespaced(ns, "a")).await.unwrap();
    a.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    let a = s.update(a).await.unwrap();
    match next_change(&mut w).await {
        WatchEvent::Added(o) => assert_eq!(o.key().name, "a"),
        e => panic!("expected Added for an object entering the selector, got {e:?}"),
    }
    let mut a2 = a.clone();
    a2.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let left = s.update(a2).await.unwrap();
    match next_change(&mut w).await {
        WatchEvent::Deleted(o) => assert_eq!(
            (o.key().name, o.revision()),
            ("a".to_string(), left.revision())
        ),
        e => panic!("expected Deleted for an object leaving the selector, got {e:?}"),
    }
}

pub(crate) async fn paging(s: Arc<dyn Store>) {
    let ns = "paging";
    for i in 0..25 {
        s.create(config_map(
            ns,
            &format!("p{i:02}"),
            json!({"even": (i % 2 == 0).to_string()}),
            "v",
        ))
        .await
        .unwrap();
    }
    let first = s
        .list(&CM, Some(ns), &ListOptions::default().limit(10))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    // Changes after the first page do not show in later pages: all pages are one revision.
    s.delete(
        &CM,
        &ObjectKey::namespaced(ns, "p24"),
        &Preconditions::default(),
    )
    .await
    .unwrap();
    s.create(config_map(ns, "p99", json!({}), "late"))
        .await
        .unwrap();
    let mut all = first.items.clone();
    let mut token = first.continue_token.clone();
    while let Some(t) = token {
        let page = s
            .list(
                &CM,
                Some(ns),
                &ListOptions::default().limit(10).continue_from(t),
            )
            .await
            .unwrap();
        assert_eq!(page.resource_version, first.resource_version);
        all.extend(page.items);
        token = page.continue_token;
    }
    let names: Vec<String> = all.iter().map(|o| o.key().name).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    // Paging composes with selectors.
    let even = ListOptions::default()
        .labels(Selector::parse("even=true").unwrap())
        .limit(4);
    let page = s.list(&CM, Some(ns), &even).await.unwrap();
    assert_eq!(page.items.len(), 4);
    assert!(page.continue_token.is_some());
    assert!(matches!(
        s.list(
            &CM,
            Some(ns),
            &ListOptions::default().continue_from("garbage")
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

pub(crate) async fn concurrent_writers(s: Arc<dyn Store>) {
    let ns = "concurrent";
    s.create(config_map(ns, "counter", json!({}), "0"))
        .await
        .unwrap();
    let key = ObjectKey::namespaced(ns, "counter");
    let writers = 16;
    let increments = 20;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..5 {
                let o = s
                    .create(config_map(ns, &format!("w{w}-{i}"), json!({}), "x"))
                    .await
                    .unwrap();
                revisions.push(o.revision().unwrap());
            }
            let mut done = 0;
            while done < increments {
                let mut cur = s.get(&CM, &key).await.unwrap();
                let n: u64 = value_of(&cur).parse().unwrap();
                cur.data["data"]["value"] = json!((n + 1).to_string());
                match s.update(cur).await {
                    Ok(o) => {
                        revisions.push(o.revision().unwrap());
                        done += 1;
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => panic!("{e}"),
                }
            }
            revisions
        }));
    }
    let mut all = BTreeSet::new();
    let mut total = 0;
    for t in tasks {
        let revisions = t.await.unwrap();
        total += revisions.len();
        all.extend(revisions);
    }
    assert_eq!(
        all.len(),
        total,
        "every acknowledged write has its own revision"
    );
    let counter = s.get(&CM, &key).await.unwrap();
    assert_eq!(
        value_of(&counter),
        (writers * increments).to_string(),
        "no lost update"
    );
    let list = s
        .list(&CM, Some(ns), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1 + writers * 5);
}

/// Writes without a resourceVersion, and creates from `generateName`, racing: each succeeds
/// with its own revision, the last revision's value is what stays, and no generated name is
/// handed out twice.
pub(crate) async fn unconditional_races(s: Arc<dyn Store>) {
    let ns = "races";
    s.create(config_map(ns, "shared", json!({}), "start"))
        .await
        .unwrap();
    let key = ObjectKey::namespaced(ns, "shared");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..15 {
                let mut o = config_map(ns, &key.name, json!({}), &format!("w{w}-{i}"));
                o.metadata.resource_version = None;
                let o = s.update(o).await.unwrap();
                acked.push((o.revision().unwrap(), value_of(&o)));
                let mut generated = config_map(ns, "", json!({}), "g");
                generated.metadata.name = None;
                generated.metadata.generate_name = Some("gen-".into());
                let g = s.create(generated).await.unwrap();
                acked.push((g.revision().unwrap(), g.metadata.name.unwrap()));
            }
            acked
        }));
    }
    let mut revisions = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut last_update = (0, String::new());
    for t in tasks {
        for (revision, what) in t.await.unwrap() {
            assert!(
                revisions.insert(revision),
                "revision {revision} acknowledged twice"
            );
            if let Some(name) = what.strip_prefix("gen-") {
                assert!(
                    names.insert(name.to_string()),
                    "name gen-{name} given twice"
                );
            } else if revision > last_update.0 {
                last_update = (revision, what);
            }
        }
    }
    assert_eq!(names.len(), 8 * 15);
    let shared = s.get(&CM, &key).await.unwrap();
    assert_eq!(value_of(&shared), last_update.1, "the last write stays");
    assert_eq!(shared.revision(), Some(last_update.0));
    let list = s
        .list(&CM, Some(ns), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1 + 8 * 15);
}

pub(crate) async fn linearizable(s: Arc<dyn Store>) {
    let ns = "linearizable";
    for register in ["r0", "r1"] {
        let history = Arc::new(Mutex::new(Vec::new()));
        let key = ObjectKey::namespaced(ns, register);
        let mut tasks = Vec::new();
        for client in 0..4 {
            let s = s.clone();
            let key = key.clone();
            let history = history.clone();
            tasks.push(tokio::spawn(async move {
                let record = |call: Instant, op: Op| {
                    history.lock().unwrap().push(Entry {
                        call,
                        ret: Instant::now(),
                        op,
                    })
                };
                let call = Instant::now();
                let value = format!("c{client}-init");
                let created = s.create(config_map(ns, &key.name, json!({}), &value)).await;
                record(
                    call,
                    Op::Create {
                        value,
                        ok: created.is_ok(),
                    },
                );
                for step in 0..5 {
                    let call = Instant::now();
                    let current = match s.get(&CM, &key).await {
                        Ok(o) => o,
                        Err(e) => panic!("{e}"),
                    };
                    let seen = value_of(&current);
                    record(call, Op::Read(Some(seen.clone())));
                    let mut next = current;
                    // Unique values, so a value identifies a version (no ABA).
                    let new = format!("c{client}-{step}");
                    next.data["data"]["value"] = json!(new.clone());
                    let call = Instant::now();
                    let ok = match s.update(next).await {
                        Ok(_) => true,
                        Err(e) if e.is_conflict() => false,
                        Err(e) => panic!("{e}"),
                    };
                    record(
                        call,
                        Op::Cas {
                            expected: seen,
                            new,
                            ok,
                        },
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let history = history.lock().unwrap().clone();
        assert!(
            linearizability::check(&history),
            "history of {register} is not linearizable: {history:#?}"
        );
    }
}

pub(crate) async fn bookmarks(s: Arc<dyn Store>) {
    let start = s.current_revision().await.unwrap();
    let mut w = s
        .watch(
            &CM,
            Some("bookmarks"),
            &WatchOptions::from_revision(start).bookmarks(),
        )
        .await
        .unwrap();
    // A change elsewhere: the watch has nothing to deliver but can report progress past it.
    let other = s
        .create(config_map("bookmarks-elsewhere", "x", json!({}), "v"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no bookmark past revision {:?}",
            other.revision()
        );
        match next(&mut w).await {
            WatchEvent::Bookmark { resource_version }
                if Some(resource_version) >= other.revision() =>
            {
                break;
            }
            WatchEvent::Bookmark { .. } => continue,
            e => panic!("unexpected {e:?}"),
        }
    }
}
