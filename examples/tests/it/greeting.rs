//! The `greeting_controller` example: a kind of the user's own (`Greeting`), served by the API
//! server from a registry extended at run time, reconciled by a controller written in
//! `examples::greeting`; driven over HTTP and with the real kubectl.

use std::time::Duration;

use examples::greeting::{self, GreetingServer};

use crate::kubectl::{Kubectl, kubectl_binary, manifests, plain_kubeconfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_demo_runs_over_http() {
    let server = GreetingServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        greeting::demo(server.client().unwrap()),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_greeting_and_sees_its_configmap_and_status() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let server = GreetingServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: plain_kubeconfig(dir.path(), &server.url),
    };
    let manifest = manifests().join("greeting.yaml");
    let manifest = manifest.to_str().unwrap();

    // Validation is on: the server's OpenAPI names the kind, so apply needs no flags.
    let out = k.run(&["apply", "-f", manifest]).await;
    assert!(out.contains("greeting.example.com/world created"), "{out}");
    let status = k
        .wait_for(
            "the Greeting's status",
            &["get", "greet", "world", "-o", "jsonpath={.status.phase}"],
            |out| out == "Ready",
        )
        .await;
    assert_eq!(status, "Ready");
    let text = k
        .run(&[
            "get",
            "configmap",
            "greeting-world",
            "-o",
            "jsonpath={.data.greeting}",
        ])
        .await;
    assert_eq!(text, "Hello, world!");
    let listed = k.run(&["get", "greetings"]).await;
    assert!(listed.lines().any(|l| l.starts_with("world ")), "{listed}");

    // An edit through kubectl reaches the ConfigMap.
    k.run(&[
        "patch",
        "greeting",
        "world",
        "--type=merge",
        "-p",
        r#"{"spec":{"message":"Howdy"}}"#,
    ])
    .await;
    k.wait_for(
        "the edited greeting",
        &[
            "get",
            "configmap",
            "greeting-world",
            "-o",
            "jsonpath={.data.greeting}",
        ],
        |out| out == "Howdy, world!",
    )
    .await;

    let out = k.run(&["delete", "-f", manifest]).await;
    assert!(out.contains("deleted"), "{out}");
    k.wait_for(
        "the ConfigMap to go with its Greeting",
        &["get", "configmaps", "-o", "name"],
        |out| !out.contains("greeting-world"),
    )
    .await;
    server.shutdown().await.unwrap();
}
