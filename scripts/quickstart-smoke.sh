#!/usr/bin/env bash
# A new user's path through the quickstart, with the real kubectl:
# start the cluster -> kubectl apply the web app -> pods Running -> HTTP through the Service's
# NodePort answered by the pods -> kubectl scale -> stop and restart (state kept, pods back)
# -> kubectl delete -> a Job to completion and a DaemonSet's pod on each node -> the README's
# imperative commands (create deployment, expose, run, logs) -> an image's Entrypoint run with no
# command -> clean stop with no pod process left. Images come from a real registry on loopback
# (scripts/local-registry.sh) through the quickstart's --registry-mirror, as Docker Hub would
# serve them.
# Runs on its own loopback address and data directory; needs root for pod networking.
set -euo pipefail
cd "$(dirname "$0")/.."

addr="${QUICKSTART_ADDR:-127.0.0.9}"
# The quickstart runs from a directory of its own with the default, relative data directory
# (`./kube-parts-data`), as a new user runs it.
work="$(mktemp -d)"
data="$work/kube-parts-data"
log="$work/quickstart.log"
export KUBECONFIG="$data/kubeconfig"
cargo build --quiet --example quickstart
bin="$PWD/target/debug/examples/quickstart"
pid=
registry="$(./scripts/local-registry.sh start "$work/registry" "${QUICKSTART_REGISTRY_PORT:-5055}")"

start() {
  (cd "$work" && exec "$bin" --listen "$addr:6443" --nodes 2 \
    --registry-mirror "docker.io=http://$registry") >>"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    kubectl get nodes >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the quickstart did not come up:"; cat "$log"; exit 1
}
stop() {
  kill -TERM "$pid"
  wait "$pid"
}
fail() { echo "FAILED: $*"; cat "$log"; kill -TERM "$pid" 2>/dev/null || true; exit 1; }
trap 'kill -TERM "$pid" 2>/dev/null || true; ./scripts/local-registry.sh stop "$work/registry"; rm -rf "$work"' EXIT

curl_web() {
  for _ in $(seq 50); do
    out="$(curl -s --max-time 2 "http://$addr:30080/" || true)"
    [[ "$out" == hello\ from\ web-* ]] && { echo "$out"; return 0; }
    sleep 0.2
  done
  return 1
}

start
grep -m1 "cluster up" "$log"   # names the runtime: Oci as root with runc, else Process
kubectl apply -f examples/manifests/web.yaml
kubectl rollout status deployment/web --timeout=120s
kubectl get pods -o wide
curl_web || fail "no answer through NodePort 30080"
kubectl scale deployment web --replicas=3
kubectl rollout status deployment/web --timeout=120s
[[ "$(kubectl get deployment web -o jsonpath='{.status.readyReplicas}')" == 3 ]] || fail "not 3 ready"
kubectl exec deployment/web -- ls / | grep -qx bin || fail "kubectl exec deployment/web -- ls / did not list /bin"

echo "==> restart: the cluster keeps its state and its pods come back"
stop
start
[[ "$(kubectl get deployment web -o jsonpath='{.spec.replicas}')" == 3 ]] || fail "deployment lost on restart"
kubectl rollout status deployment/web --timeout=120s
curl_web || fail "no answer through NodePort 30080 after restart"

kubectl delete -f examples/manifests/web.yaml
kubectl wait --for=delete pod -l app=web --timeout=60s || true
[[ -z "$(kubectl get pods --no-headers 2>/dev/null)" ]] || fail "pods left after delete"

echo "==> a Job runs to completion, a DaemonSet puts a pod on each node"
kubectl apply -f examples/manifests/job.yaml
kubectl wait --for=condition=Complete job/sums --timeout=120s || fail "the Job did not complete"
kubectl apply -f examples/manifests/daemonset.yaml
kubectl rollout status daemonset/node-reporter --timeout=120s
nodes_with_reporter="$(kubectl get pods -l app=node-reporter -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)"
[[ "$nodes_with_reporter" == 2 ]] || fail "reporters on $nodes_with_reporter nodes, not 2"
kubectl delete -f examples/manifests/job.yaml -f examples/manifests/daemonset.yaml
kubectl wait --for=delete pod --all --timeout=60s || true
[[ -z "$(kubectl get pods --no-headers 2>/dev/null)" ]] || fail "pods left after deleting the Job and DaemonSet"

echo "==> the README's imperative commands: create deployment, expose, run, logs"
kubectl create deployment hello --image=busybox --replicas=2 -- httpd -f -p 8080
kubectl expose deployment hello --port=80 --target-port=8080 --type=NodePort
kubectl rollout status deployment/hello --timeout=120s
hello_port="$(kubectl get service hello -o jsonpath='{.spec.ports[0].nodePort}')"
answered=
for _ in $(seq 50); do
  # busybox httpd with nothing to serve answers 404: any HTTP answer is the pods'.
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr:$hello_port/" || true)"
  [[ "$code" =~ ^[1-5][0-9][0-9]$ ]] && { answered=1; break; }
  sleep 0.2
done
[[ -n "$answered" ]] || fail "no HTTP answer through the hello NodePort $hello_port"
kubectl run once --image=busybox --restart=Never -- echo hi
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/once --timeout=60s || fail "pod once did not succeed"
[[ "$(kubectl logs once)" == hi ]] || fail "kubectl logs once did not print hi"
echo "==> an image's Entrypoint runs when the pod names no command"
kubectl create deployment entry --image=hello-httpd:1
kubectl expose deployment entry --port=80 --target-port=8080 --type=NodePort
kubectl rollout status deployment/entry --timeout=120s
# Read whole before matching: `grep -q` stops at the first match, and under pipefail the
# SIGPIPE kubectl would get then fails the check.
pulled="$(kubectl get events --field-selector reason=Pulled -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')"
grep -q 'hello-httpd:1' <<<"$pulled" || fail "no Pulled event for hello-httpd:1: $pulled"
entry_port="$(kubectl get service entry -o jsonpath='{.spec.ports[0].nodePort}')"
entry=
for _ in $(seq 50); do
  entry="$(curl -s --max-time 2 "http://$addr:$entry_port/" || true)"
  [[ "$entry" == "hello from an image's entrypoint" ]] && break
  sleep 0.2
done
[[ "$entry" == "hello from an image's entrypoint" ]] || fail "the image's entrypoint did not answer: $entry"
kubectl delete deployment hello entry
kubectl delete service hello entry
kubectl delete pod once
kubectl wait --for=delete pod --all --timeout=60s || true
[[ -z "$(kubectl get pods --no-headers 2>/dev/null)" ]] || fail "pods left after deleting hello and once"
stop
if pgrep -f "httpd -f (-v )?-p 8080" >/dev/null; then fail "a pod process outlived the cluster"; fi
echo "quickstart smoke: ok"
