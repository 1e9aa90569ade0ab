use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube_core::api::{ConfigMap, Node, Pod};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::{FieldSelector, Selector};
use kube_core::store::{
    ListOptions, Preconditions, Store, StoreError, WatchEvent, WatchOptions, WatchStream,
};
use kube_core::typed::Api;
use kube_store::{MemStore, StoreConfig};
use serde_json::json;

fn store() -> Arc<dyn Store> {
    Arc::new(MemStore::new())
}

fn object(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn pod(name: &str, labels: serde_json::Value) -> DynamicObject {
    object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
}

async fn next(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch event within 5s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn create_assigns_metadata_and_rejects_bad_input() {
    let s = store();
    let created = s.create(pod("a", json!({"app": "web"}))).await.unwrap();
    assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let err = s.create(pod("a", json!({}))).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");

    let mut generated = pod("", json!({}));
    generated.metadata.generate_name = Some("web-".into());
    let g = s.create(generated).await.unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");

    let cases = [
        (pod("", json!({})), "generateName is required"),
        (pod("Bad_Name", json!({})), "DNS subdomain"),
        (
            object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})),
            "must have metadata.namespace",
        ),
        (
            object(
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
            ),
            "unknown kind",
        ),
        (
            object(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "resourceVersion": "5"}}),
            ),
            "resourceVersion must not be set",
        ),
    ];
    for (obj, message) in cases {
        match s.create(obj).await {
            Err(StoreError::Invalid(m)) => assert!(m.contains(message), "{m}"),
            other => panic!("expected Invalid({message}), got {other:?}"),
        }
    }
    // Nothing was written by the failed creates.
    assert_eq!(s.current_revision().await.unwrap(), 2);
}

#[tokio::test]
async fn cluster_scoped_objects_drop_namespace() {
    let s = store();
    let node = s
        .create(object(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "x"}})))
        .await
        .unwrap();
    assert_eq!(node.metadata.namespace, None);
    let nodes: Api<Node> = Api::all(s);
    assert_eq!(
        nodes.get("n1").await.unwrap().metadata.name.as_deref(),
        Some("n1")
    );
}

#[tokio::test]
async fn update_is_optimistic_and_generation_tracks_spec() {
    let s = store();
    let v1 = s.create(pod("a", json!({}))).await.unwrap();

    let mut status_only = v1.clone();
    status_only
        .data
        .insert("status".into(), json!({"phase": "Running"}));
    let v2 = s.update(status_only).await.unwrap();
    assert_eq!(v2.metadata.generation, Some(1));
    assert_eq!(v2.metadata.uid, v1.metadata.uid);

    let mut stale = v1.clone();
    stale.data["spec"]["nodeName"] = json!("n1");
    let err = s.update(stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    let mut spec_change = v2.clone();
    spec_change.data["spec"]["nodeName"] = json!("n1");
    let v3 = s.update(spec_change).await.unwrap();
    assert_eq!(v3.metadata.generation, Some(2));
    assert_eq!(v3.revision(), Some(3));

    let missing = pod("zzz", json!({}));
    assert!(s.update(missing).await.unwrap_err().is_not_found());
}

/// A metadata-only update (a label, an annotation, a finalizer) stores a version that shares
/// spec and status with the one before, keeps `generation`, and leaves the caller's copy and
/// the older version as they were.
#[tokio::test]
async fn metadata_only_updates_share_the_unchanged_fields() {
    let s = store();
    let v1 = s.create_shared(pod("a", json!({}))).await.unwrap();

    let mut labelled = (*v1).clone();
    labelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("app".into(), "web".into());
    let v2 = s.update_shared(labelled).await.unwrap();
    assert!(v2.data.shares_with(&v1.data), "spec shared, not copied");
    assert_eq!(v2.metadata.generation, Some(1));
    assert_eq!(v2.metadata.labels.as_ref().unwrap()["app"], "web");
    assert_eq!(v1.metadata.labels.as_ref().unwrap().get("app"), None);

    // Changing the spec of a copy copies the fields first: the stored versions keep theirs.
    let mut moved = (*v2).clone();
    moved.data["spec"]["nodeName"] = json!("n1");
    let v3 = s.update_shared(moved).await.unwrap();
    assert!(!v3.data.shares_with(&v2.data));
    assert_eq!(v3.metadata.generation, Some(2));
    assert_eq!(v2.data["spec"].get("nodeName"), None);
    let stored = s.get(&GroupKind::POD, &v3.key()).await.unwrap();
    assert_eq!(stored.data["spec"]["nodeName"], "n1");
}

#[tokio::test]
async fn list_filters_by_namespace_labels_and_fields() {
    let s = store();
    s.create(pod("a", json!({"app": "web", "tier": "front"})))
        .await
        .unwrap();
    s.create(pod("b", json!({"app": "web", "tier": "back"})))
        .await
        .unwrap();
    s.create(pod("c", json!({"app": "db"}))).await.unwrap();
    let mut other = pod("d", json!({"app": "web"}));
    other.metadata.namespace = Some("other".into());
    s.create(other).await.unwrap();

    let names = |list: kube_core::store::ObjectList| {
        list.items
            .into_iter()
            .map(|o| o.key().to_string())
            .collect::<Vec<_>>()
    };
    let web = ListOptions::default().labels(Selector::parse("app=web,tier!=back").unwrap());
    assert_eq!(
        names(
            s.list(&GroupKind::POD, Some("default"), &web)
                .await
                .unwrap()
        ),
        ["default/a"]
    );
    let all_web = ListOptions::default().labels(Selector::parse("app in (web)").unwrap());
    assert_eq!(
        names(s.list(&GroupKind::POD, None, &all_web).await.unwrap()),
        ["default/a", "default/b", "other/d"]
    );
    let by_name = ListOptions::default().fields(FieldSelector::parse("metadata.name=c").unwrap());
    let list = s.list(&GroupKind::POD, None, &by_name).await.unwrap();
    assert_eq!(names(list.clone()), ["default/c"]);
    assert_eq!(list.resource_version, 4);
}

#[tokio::test]
async fn delete_honours_preconditions() {
    let s = store();
    let a = s.create(pod("a", json!({}))).await.unwrap();
    let key = ObjectKey::namespaced("default", "a");
    let err = s
        .delete(&GroupKind::POD, &key, &Preconditions::uid("other"))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let gone = s
        .delete(
            &GroupKind::POD,
            &key,
            &Preconditions::uid(a.metadata.uid.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(gone.revision(), Some(2));
    assert!(
        s.get(&GroupKind::POD, &key)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        s.delete(&GroupKind::POD, &key, &Preconditions::default())
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn watch_resumes_from_a_revision_without_gaps() {
    let s = store();
    s.create(pod("a", json!({}))).await.unwrap(); // rev 1
    let list = s
        .list(&GroupKind::POD, None, &ListOptions::default())
        .await
        .unwrap();
    s.create(pod("b", json!({}))).await.unwrap(); // rev 2, before the watch starts
    let mut w = s
        .watch(
            &GroupKind::POD,
            None,
            &WatchOptions::from_revision(list.resource_version),
        )
        .await
        .unwrap();
    s.delete(
        &GroupKind::POD,
        &ObjectKey::namespaced("default", "a"),
        &Preconditions::default(),
    )
    .await
    .unwrap(); // rev 3
    match next(&mut w).await {
        WatchEvent::Added(o) => assert_eq!((o.key().name, o.revision()), ("b".into(), Some(2))),
        e => panic!("{e:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Deleted(o) => assert_eq!((o.key().name, o.revision()), ("a".into(), Some(3))),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn filtered_watch_sees_objects_enter_and_leave() {
    let s = store();
    let on_n1 = WatchOptions::default()
        .filter(ListOptions::default().fields(FieldSelector::equals("spec.nodeName", "n1")));
    let mut w = s
        .watch(&GroupKind::POD, Some("default"), &on_n1)
        .await
        .unwrap();
    let p = s.create(pod("a", json!({}))).await.unwrap();
    let mut bound = p.clone();
    bound.data["spec"]["nodeName"] = json!("n1");
    let bound = s.update(bound).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Added(o) => assert_eq!(o.revision(), Some(2)),
        e => panic!("binding should be seen as Added, got {e:?}"),
    }
    let mut moved = bound.clone();
    moved.data["spec"]["nodeName"] = json!("n2");
    s.update(moved).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Deleted(o) => assert_eq!(o.revision(), Some(3)),
        e => panic!("moving off should be seen as Deleted, got {e:?}"),
    }
}

#[tokio::test]
async fn node_watches_get_every_change_of_their_node_in_order_however_far_behind() {
    // Node watches are woken only by their node's changes; one that falls far behind (more
    // changes than a watch queues) and one started from an old revision must still see every
    // change of their node, in order, and nothing of the other node's.
    let s = store();
    let for_node = |node: &str| {
        WatchOptions::default()
            .filter(ListOptions::default().fields(FieldSelector::equals("spec.nodeName", node)))
    };
    let start = s.current_revision().await.unwrap();
    let mut behind = s
        .watch(&GroupKind::POD, None, &for_node("n1"))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..3000 {
        let node = if i % 3 == 0 { "n2" } else { "n1" };
        let mut p = pod(&format!("p{i}"), json!({}));
        p.data["spec"]["nodeName"] = json!(node);
        let created = s.create(p).await.unwrap();
        if node == "n1" {
            expected.push(created.revision().unwrap());
        }
    }
    let late = WatchOptions::from_revision(start)
        .filter(ListOptions::default().fields(FieldSelector::equals("spec.nodeName", "n1")));
    let mut from_old_revision = s.watch(&GroupKind::POD, None, &late).await.unwrap();
    for w in [&mut behind, &mut from_old_revision] {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            match next(w).await {
                WatchEvent::Added(o) => {
                    assert_eq!(o.field("spec.nodeName"), Some(json!("n1")));
                    seen.push(o.revision().unwrap());
                }
                e => panic!("only n1's pods being added, got {e:?}"),
            }
        }
        assert_eq!(seen, expected);
    }
    // And the next change after all that is delivered at once.
    let mut p = pod("last", json!({}));
    p.data["spec"]["nodeName"] = json!("n1");
    let last = s.create(p).await.unwrap().revision();
    match next(&mut behind).await {
        WatchEvent::Added(o) => assert_eq!(o.revision(), last),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn watch_behind_retained_history_is_too_old() {
    let s: Arc<dyn Store> = Arc::new(MemStore::with_config(StoreConfig::default().history(2)));
    for i in 0..5 {
        s.create(pod(&format!("p{i}"), json!({}))).await.unwrap();
    }
    match s
        .watch(&GroupKind::POD, None, &WatchOptions::from_revision(1))
        .await
    {
        Err(StoreError::TooOld {
            requested: 1,
            oldest: 3,
        }) => {}
        other => panic!("expected TooOld, got {:?}", other.map(|_| ())),
    }
    let mut w = s
        .watch(&GroupKind::POD, None, &WatchOptions::from_revision(3))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.revision(), Some(4));
    assert_eq!(next(&mut w).await.revision(), Some(5));
}

#[tokio::test]
async fn typed_api_round_trips_and_merge_patches() {
    let s = store();
    let maps: Api<ConfigMap> = Api::namespaced(s.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("cfg".into());
    cm.data = Some([("a".to_string(), "1".to_string())].into());
    maps.create(&cm).await.unwrap();
    let patched = maps
        .patch_merge("cfg", &json!({"data": {"b": "2", "a": null}}))
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap(),
        [("b".to_string(), "2".to_string())].into()
    );
    let pods: Api<Pod> = Api::namespaced(s, "default");
    assert!(pods.get_opt("none").await.unwrap().is_none());
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_history_is_told_to_relist() {
    let s: Arc<dyn Store> = Arc::new(MemStore::with_config(StoreConfig::default().history(10)));
    let mut slow = s
        .watch(&GroupKind::POD, None, &WatchOptions::from_revision(0))
        .await
        .unwrap();
    // Writers do not wait for the watcher that reads nothing...
    for i in 0..50 {
        s.create(pod(&format!("p{i}"), json!({}))).await.unwrap();
    }
    // ...which, once it reads, learns it fell behind the retained history.
    match tokio::time::timeout(Duration::from_secs(5), slow.next())
        .await
        .unwrap()
    {
        Some(Err(StoreError::TooOld {
            requested: 0,
            oldest: 40,
        })) => {}
        other => panic!("expected TooOld, got {other:?}"),
    }
    assert!(slow.next().await.is_none(), "the stream ends after TooOld");
}
