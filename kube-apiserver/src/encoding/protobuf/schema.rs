//! Field tables for the protobuf request bodies the apiserver decodes.
//!
//! Every table mirrors one `message` of Kubernetes' `generated.proto` files
//! (`k8s.io/api/{core,apps,batch,networking,policy,rbac}/v1` and
//! `k8s.io/apimachinery/pkg/apis/meta/v1`): the proto field number, the JSON
//! name (k8s protos use the JSON name as the proto field name) and the wire
//! type. Protobuf field numbers in Kubernetes are stable across versions (they
//! are only ever added, never renumbered), so these tables, checked against
//! k8s.io/api v0.26.0 / k8s.io/apimachinery v0.26.0, remain valid for newer
//! servers and clients. Newer core/v1 fields (Container 23-25, PodSpec 40-42,
//! VolumeMount 7, VolumeSource 30, ServiceSpec 23) were checked against the
//! current kubernetes/kubernetes `staging/src/k8s.io/api/core/v1/generated.proto`.
//! Fields added to other messages after v0.26 are simply unknown here.
//!
//! Note on embedded Go structs: a few messages carry an embedded struct as a
//! nested message field whose JSON form is *inlined* into the parent object
//! (Go `json:",inline"`). Those are `Volume.volumeSource` (2),
//! `ConfigMapVolumeSource.localObjectReference` (1) and
//! `EphemeralContainer.ephemeralContainerCommon` (1). They are tabled under
//! their proto field name with [`Ty::Inline`], whose fields the decoder splices into the
//! parent JSON object.

use super::{Field, Ty};

// ---------------------------------------------------------------------------
// k8s.io/apimachinery/pkg/apis/meta/v1
// ---------------------------------------------------------------------------

/// meta/v1 ObjectMeta.
pub(crate) const OBJECT_META: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "generateName", Ty::Str),
    Field::one(3, "namespace", Ty::Str),
    Field::one(4, "selfLink", Ty::Str),
    Field::one(5, "uid", Ty::Str),
    Field::one(6, "resourceVersion", Ty::Str),
    Field::one(7, "generation", Ty::Int64),
    Field::one(8, "creationTimestamp", Ty::Time),
    Field::one(9, "deletionTimestamp", Ty::Time),
    Field::one(10, "deletionGracePeriodSeconds", Ty::Int64),
    Field::one(11, "labels", Ty::MapStr),
    Field::one(12, "annotations", Ty::MapStr),
    Field::list(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    Field::list(14, "finalizers", Ty::Str),
    Field::list(17, "managedFields", Ty::Ignore),
];

/// meta/v1 OwnerReference.
pub(crate) const OWNER_REFERENCE: &[Field] = &[
    Field::one(1, "kind", Ty::Str),
    Field::one(3, "name", Ty::Str),
    Field::one(4, "uid", Ty::Str),
    Field::one(5, "apiVersion", Ty::Str),
    Field::one(6, "controller", Ty::Bool),
    Field::one(7, "blockOwnerDeletion", Ty::Bool),
];

/// meta/v1 LabelSelector.
pub(crate) const LABEL_SELECTOR: &[Field] = &[
    Field::one(1, "matchLabels", Ty::MapStr),
    Field::list(2, "matchExpressions", Ty::Msg(LABEL_SELECTOR_REQUIREMENT)),
];

/// meta/v1 LabelSelectorRequirement.
pub(crate) const LABEL_SELECTOR_REQUIREMENT: &[Field] = &[
    Field::one(1, "key", Ty::Str),
    Field::one(2, "operator", Ty::Str),
    Field::list(3, "values", Ty::Str),
];

// ---------------------------------------------------------------------------
// k8s.io/api/core/v1
// ---------------------------------------------------------------------------

/// core/v1 Pod.
pub(crate) const POD: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(POD_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// core/v1 PodTemplateSpec.
pub(crate) const POD_TEMPLATE_SPEC: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(POD_SPEC)),
];

/// core/v1 PodSpec.
pub(crate) const POD_SPEC: &[Field] = &[
    Field::list(1, "volumes", Ty::Msg(VOLUME)),
    Field::list(2, "containers", Ty::Msg(CONTAINER)),
    Field::one(3, "restartPolicy", Ty::Str),
    Field::one(4, "terminationGracePeriodSeconds", Ty::Int64),
    Field::one(5, "activeDeadlineSeconds", Ty::Int64),
    Field::one(6, "dnsPolicy", Ty::Str),
    Field::one(7, "nodeSelector", Ty::MapStr),
    Field::one(8, "serviceAccountName", Ty::Str),
    Field::one(9, "serviceAccount", Ty::Str),
    Field::one(10, "nodeName", Ty::Str),
    Field::one(11, "hostNetwork", Ty::Bool),
    Field::one(12, "hostPID", Ty::Bool),
    Field::one(13, "hostIPC", Ty::Bool),
    Field::one(14, "securityContext", Ty::Untabled),
    Field::list(15, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    Field::one(16, "hostname", Ty::Str),
    Field::one(17, "subdomain", Ty::Str),
    Field::one(18, "affinity", Ty::Untabled),
    Field::one(19, "schedulerName", Ty::Str),
    Field::list(20, "initContainers", Ty::Msg(CONTAINER)),
    Field::one(21, "automountServiceAccountToken", Ty::Bool),
    Field::list(22, "tolerations", Ty::Msg(TOLERATION)),
    Field::list(23, "hostAliases", Ty::Msg(HOST_ALIAS)),
    Field::one(24, "priorityClassName", Ty::Str),
    Field::one(25, "priority", Ty::Int32),
    Field::one(26, "dnsConfig", Ty::Untabled),
    Field::one(27, "shareProcessNamespace", Ty::Bool),
    Field::list(28, "readinessGates", Ty::Untabled),
    Field::one(29, "runtimeClassName", Ty::Str),
    Field::one(30, "enableServiceLinks", Ty::Bool),
    Field::one(31, "preemptionPolicy", Ty::Str),
    Field::one(32, "overhead", Ty::MapQuantity),
    Field::list(33, "topologySpreadConstraints", Ty::Untabled),
    Field::list(34, "ephemeralContainers", Ty::Untabled),
    Field::one(35, "setHostnameAsFQDN", Ty::Bool),
    Field::one(36, "os", Ty::Untabled),
    Field::one(37, "hostUsers", Ty::Bool),
    Field::list(38, "schedulingGates", Ty::Untabled),
    Field::list(39, "resourceClaims", Ty::Untabled),
    Field::one(40, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    Field::one(41, "hostnameOverride", Ty::Str),
    Field::one(42, "workloadRef", Ty::Untabled),
];

/// core/v1 Toleration.
pub(crate) const TOLERATION: &[Field] = &[
    Field::one(1, "key", Ty::Str),
    Field::one(2, "operator", Ty::Str),
    Field::one(3, "value", Ty::Str),
    Field::one(4, "effect", Ty::Str),
    Field::one(5, "tolerationSeconds", Ty::Int64),
];

/// core/v1 HostAlias.
pub(crate) const HOST_ALIAS: &[Field] = &[
    Field::one(1, "ip", Ty::Str),
    Field::list(2, "hostnames", Ty::Str),
];

/// core/v1 Container.
pub(crate) const CONTAINER: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "image", Ty::Str),
    Field::list(3, "command", Ty::Str),
    Field::list(4, "args", Ty::Str),
    Field::one(5, "workingDir", Ty::Str),
    Field::list(6, "ports", Ty::Msg(CONTAINER_PORT)),
    Field::list(7, "env", Ty::Msg(ENV_VAR)),
    Field::one(8, "resources", Ty::Msg(RESOURCE_REQUIREMENTS)),
    Field::list(9, "volumeMounts", Ty::Msg(VOLUME_MOUNT)),
    Field::one(10, "livenessProbe", Ty::Untabled),
    Field::one(11, "readinessProbe", Ty::Untabled),
    Field::one(12, "lifecycle", Ty::Untabled),
    Field::one(13, "terminationMessagePath", Ty::Str),
    Field::one(14, "imagePullPolicy", Ty::Str),
    Field::one(15, "securityContext", Ty::Untabled),
    Field::one(16, "stdin", Ty::Bool),
    Field::one(17, "stdinOnce", Ty::Bool),
    Field::one(18, "tty", Ty::Bool),
    Field::list(19, "envFrom", Ty::Untabled),
    Field::one(20, "terminationMessagePolicy", Ty::Str),
    Field::list(21, "volumeDevices", Ty::Untabled),
    Field::one(22, "startupProbe", Ty::Untabled),
    Field::list(23, "resizePolicy", Ty::Untabled),
    Field::one(24, "restartPolicy", Ty::Str),
    Field::list(25, "restartPolicyRules", Ty::Untabled),
];

/// core/v1 ContainerPort.
pub(crate) const CONTAINER_PORT: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "hostPort", Ty::Int32),
    Field::one(3, "containerPort", Ty::Int32),
    Field::one(4, "protocol", Ty::Str),
    Field::one(5, "hostIP", Ty::Str),
];

/// core/v1 EnvVar.
pub(crate) const ENV_VAR: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "value", Ty::Str),
    Field::one(3, "valueFrom", Ty::Untabled),
];

/// core/v1 ResourceRequirements.
pub(crate) const RESOURCE_REQUIREMENTS: &[Field] = &[
    Field::one(1, "limits", Ty::MapQuantity),
    Field::one(2, "requests", Ty::MapQuantity),
    Field::list(3, "claims", Ty::Untabled),
];

/// core/v1 VolumeMount.
pub(crate) const VOLUME_MOUNT: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "readOnly", Ty::Bool),
    Field::one(3, "mountPath", Ty::Str),
    Field::one(4, "subPath", Ty::Str),
    Field::one(5, "mountPropagation", Ty::Str),
    Field::one(6, "subPathExpr", Ty::Str),
    Field::one(7, "recursiveReadOnly", Ty::Str),
];

/// core/v1 Volume.
pub(crate) const VOLUME: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    // Embedded in Go (`json:",inline"`): the VolumeSource's fields sit in the Volume object.
    Field::one(2, "volumeSource", Ty::Inline(VOLUME_SOURCE)),
];

/// core/v1 VolumeSource.
pub(crate) const VOLUME_SOURCE: &[Field] = &[
    Field::one(1, "hostPath", Ty::Msg(HOST_PATH_VOLUME_SOURCE)),
    Field::one(2, "emptyDir", Ty::Msg(EMPTY_DIR_VOLUME_SOURCE)),
    Field::one(3, "gcePersistentDisk", Ty::Untabled),
    Field::one(4, "awsElasticBlockStore", Ty::Untabled),
    Field::one(5, "gitRepo", Ty::Untabled),
    Field::one(6, "secret", Ty::Msg(SECRET_VOLUME_SOURCE)),
    Field::one(7, "nfs", Ty::Untabled),
    Field::one(8, "iscsi", Ty::Untabled),
    Field::one(9, "glusterfs", Ty::Untabled),
    Field::one(
        10,
        "persistentVolumeClaim",
        Ty::Msg(PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE),
    ),
    Field::one(11, "rbd", Ty::Untabled),
    Field::one(12, "flexVolume", Ty::Untabled),
    Field::one(13, "cinder", Ty::Untabled),
    Field::one(14, "cephfs", Ty::Untabled),
    Field::one(15, "flocker", Ty::Untabled),
    Field::one(16, "downwardAPI", Ty::Untabled),
    Field::one(17, "fc", Ty::Untabled),
    Field::one(18, "azureFile", Ty::Untabled),
    Field::one(19, "configMap", Ty::Msg(CONFIG_MAP_VOLUME_SOURCE)),
    Field::one(20, "vsphereVolume", Ty::Untabled),
    Field::one(21, "quobyte", Ty::Untabled),
    Field::one(22, "azureDisk", Ty::Untabled),
    Field::one(23, "photonPersistentDisk", Ty::Untabled),
    Field::one(24, "portworxVolume", Ty::Untabled),
    Field::one(25, "scaleIO", Ty::Untabled),
    Field::one(26, "projected", Ty::Untabled),
    Field::one(27, "storageos", Ty::Untabled),
    Field::one(28, "csi", Ty::Untabled),
    Field::one(29, "ephemeral", Ty::Untabled),
    Field::one(30, "image", Ty::Untabled),
];

/// core/v1 HostPathVolumeSource.
pub(crate) const HOST_PATH_VOLUME_SOURCE: &[Field] = &[
    Field::one(1, "path", Ty::Str),
    Field::one(2, "type", Ty::Str),
];

/// core/v1 EmptyDirVolumeSource.
pub(crate) const EMPTY_DIR_VOLUME_SOURCE: &[Field] = &[
    Field::one(1, "medium", Ty::Str),
    Field::one(2, "sizeLimit", Ty::Quantity),
];

/// core/v1 SecretVolumeSource.
pub(crate) const SECRET_VOLUME_SOURCE: &[Field] = &[
    Field::one(1, "secretName", Ty::Str),
    Field::list(2, "items", Ty::Msg(KEY_TO_PATH)),
    Field::one(3, "defaultMode", Ty::Int32),
    Field::one(4, "optional", Ty::Bool),
];

/// core/v1 ConfigMapVolumeSource.
pub(crate) const CONFIG_MAP_VOLUME_SOURCE: &[Field] = &[
    // Embedded in Go (`json:",inline"`): `name` sits in the configMap object.
    Field::one(
        1,
        "localObjectReference",
        Ty::Inline(LOCAL_OBJECT_REFERENCE),
    ),
    Field::list(2, "items", Ty::Msg(KEY_TO_PATH)),
    Field::one(3, "defaultMode", Ty::Int32),
    Field::one(4, "optional", Ty::Bool),
];

/// core/v1 PersistentVolumeClaimVolumeSource.
pub(crate) const PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: &[Field] = &[
    Field::one(1, "claimName", Ty::Str),
    Field::one(2, "readOnly", Ty::Bool),
];

/// core/v1 KeyToPath.
pub(crate) const KEY_TO_PATH: &[Field] = &[
    Field::one(1, "key", Ty::Str),
    Field::one(2, "path", Ty::Str),
    Field::one(3, "mode", Ty::Int32),
];

/// core/v1 LocalObjectReference.
pub(crate) const LOCAL_OBJECT_REFERENCE: &[Field] = &[Field::one(1, "name", Ty::Str)];

/// core/v1 ObjectReference.
pub(crate) const OBJECT_REFERENCE: &[Field] = &[
    Field::one(1, "kind", Ty::Str),
    Field::one(2, "namespace", Ty::Str),
    Field::one(3, "name", Ty::Str),
    Field::one(4, "uid", Ty::Str),
    Field::one(5, "apiVersion", Ty::Str),
    Field::one(6, "resourceVersion", Ty::Str),
    Field::one(7, "fieldPath", Ty::Str),
];

/// core/v1 Namespace.
pub(crate) const NAMESPACE: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// core/v1 NamespaceSpec.
pub(crate) const NAMESPACE_SPEC: &[Field] = &[Field::list(1, "finalizers", Ty::Str)];

/// core/v1 ConfigMap.
pub(crate) const CONFIG_MAP: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "data", Ty::MapStr),
    Field::one(3, "binaryData", Ty::MapBytes),
    Field::one(4, "immutable", Ty::Bool),
];

/// core/v1 Secret.
pub(crate) const SECRET: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "data", Ty::MapBytes),
    Field::one(3, "type", Ty::Str),
    Field::one(4, "stringData", Ty::MapStr),
    Field::one(5, "immutable", Ty::Bool),
];

/// core/v1 ServiceAccount.
pub(crate) const SERVICE_ACCOUNT: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::list(2, "secrets", Ty::Msg(OBJECT_REFERENCE)),
    Field::list(3, "imagePullSecrets", Ty::Msg(LOCAL_OBJECT_REFERENCE)),
    Field::one(4, "automountServiceAccountToken", Ty::Bool),
];

/// core/v1 Service.
pub(crate) const SERVICE: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(SERVICE_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// core/v1 ServiceSpec.
pub(crate) const SERVICE_SPEC: &[Field] = &[
    Field::list(1, "ports", Ty::Msg(SERVICE_PORT)),
    Field::one(2, "selector", Ty::MapStr),
    Field::one(3, "clusterIP", Ty::Str),
    Field::one(4, "type", Ty::Str),
    Field::list(5, "externalIPs", Ty::Str),
    Field::one(7, "sessionAffinity", Ty::Str),
    Field::one(8, "loadBalancerIP", Ty::Str),
    Field::list(9, "loadBalancerSourceRanges", Ty::Str),
    Field::one(10, "externalName", Ty::Str),
    Field::one(11, "externalTrafficPolicy", Ty::Str),
    Field::one(12, "healthCheckNodePort", Ty::Int32),
    Field::one(13, "publishNotReadyAddresses", Ty::Bool),
    Field::one(14, "sessionAffinityConfig", Ty::Untabled),
    Field::one(17, "ipFamilyPolicy", Ty::Str),
    Field::list(18, "clusterIPs", Ty::Str),
    Field::list(19, "ipFamilies", Ty::Str),
    Field::one(20, "allocateLoadBalancerNodePorts", Ty::Bool),
    Field::one(21, "loadBalancerClass", Ty::Str),
    Field::one(22, "internalTrafficPolicy", Ty::Str),
    Field::one(23, "trafficDistribution", Ty::Str),
];

/// core/v1 ServicePort.
pub(crate) const SERVICE_PORT: &[Field] = &[
    Field::one(1, "name", Ty::Str),
    Field::one(2, "protocol", Ty::Str),
    Field::one(3, "port", Ty::Int32),
    Field::one(4, "targetPort", Ty::IntOrString),
    Field::one(5, "nodePort", Ty::Int32),
    Field::one(6, "appProtocol", Ty::Str),
];

// ---------------------------------------------------------------------------
// k8s.io/api/apps/v1
// ---------------------------------------------------------------------------

/// apps/v1 Deployment.
pub(crate) const DEPLOYMENT: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(DEPLOYMENT_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// apps/v1 DeploymentSpec.
pub(crate) const DEPLOYMENT_SPEC: &[Field] = &[
    Field::one(1, "replicas", Ty::Int32),
    Field::one(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    Field::one(3, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
    Field::one(4, "strategy", Ty::Msg(DEPLOYMENT_STRATEGY)),
    Field::one(5, "minReadySeconds", Ty::Int32),
    Field::one(6, "revisionHistoryLimit", Ty::Int32),
    Field::one(7, "paused", Ty::Bool),
    Field::one(9, "progressDeadlineSeconds", Ty::Int32),
];

/// apps/v1 DeploymentStrategy.
pub(crate) const DEPLOYMENT_STRATEGY: &[Field] = &[
    Field::one(1, "type", Ty::Str),
    Field::one(2, "rollingUpdate", Ty::Msg(ROLLING_UPDATE_DEPLOYMENT)),
];

/// apps/v1 RollingUpdateDeployment.
pub(crate) const ROLLING_UPDATE_DEPLOYMENT: &[Field] = &[
    Field::one(1, "maxUnavailable", Ty::IntOrString),
    Field::one(2, "maxSurge", Ty::IntOrString),
];

// ---------------------------------------------------------------------------
// k8s.io/api/batch/v1
// ---------------------------------------------------------------------------

/// batch/v1 Job.
pub(crate) const JOB: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(JOB_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// batch/v1 JobSpec.
pub(crate) const JOB_SPEC: &[Field] = &[
    Field::one(1, "parallelism", Ty::Int32),
    Field::one(2, "completions", Ty::Int32),
    Field::one(3, "activeDeadlineSeconds", Ty::Int64),
    Field::one(4, "selector", Ty::Msg(LABEL_SELECTOR)),
    Field::one(5, "manualSelector", Ty::Bool),
    Field::one(6, "template", Ty::Msg(POD_TEMPLATE_SPEC)),
    Field::one(7, "backoffLimit", Ty::Int32),
    Field::one(8, "ttlSecondsAfterFinished", Ty::Int32),
    Field::one(9, "completionMode", Ty::Str),
    Field::one(10, "suspend", Ty::Bool),
    Field::one(11, "podFailurePolicy", Ty::Untabled),
    Field::one(12, "backoffLimitPerIndex", Ty::Int32),
    Field::one(13, "maxFailedIndexes", Ty::Int32),
    Field::one(14, "podReplacementPolicy", Ty::Str),
];

/// batch/v1 CronJob (`kubectl create cronjob`).
pub(crate) const CRON_JOB: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(CRON_JOB_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// batch/v1 CronJobSpec.
pub(crate) const CRON_JOB_SPEC: &[Field] = &[
    Field::one(1, "schedule", Ty::Str),
    Field::one(2, "startingDeadlineSeconds", Ty::Int64),
    Field::one(3, "concurrencyPolicy", Ty::Str),
    Field::one(4, "suspend", Ty::Bool),
    Field::one(5, "jobTemplate", Ty::Msg(JOB_TEMPLATE_SPEC)),
    Field::one(6, "successfulJobsHistoryLimit", Ty::Int32),
    Field::one(7, "failedJobsHistoryLimit", Ty::Int32),
    Field::one(8, "timeZone", Ty::Str),
];

/// batch/v1 JobTemplateSpec.
pub(crate) const JOB_TEMPLATE_SPEC: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(JOB_SPEC)),
];

// ---------------------------------------------------------------------------
// k8s.io/api/policy/v1
// ---------------------------------------------------------------------------

/// policy/v1 PodDisruptionBudget.
pub(crate) const POD_DISRUPTION_BUDGET: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(POD_DISRUPTION_BUDGET_SPEC)),
    Field::one(3, "status", Ty::Ignore),
];

/// policy/v1 PodDisruptionBudgetSpec.
pub(crate) const POD_DISRUPTION_BUDGET_SPEC: &[Field] = &[
    Field::one(1, "minAvailable", Ty::IntOrString),
    Field::one(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    Field::one(3, "maxUnavailable", Ty::IntOrString),
    Field::one(4, "unhealthyPodEvictionPolicy", Ty::Str),
];

// ---------------------------------------------------------------------------
// k8s.io/api/networking/v1
// ---------------------------------------------------------------------------

/// networking/v1 NetworkPolicy.
pub(crate) const NETWORK_POLICY: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::one(2, "spec", Ty::Msg(NETWORK_POLICY_SPEC)),
];

/// networking/v1 NetworkPolicySpec.
pub(crate) const NETWORK_POLICY_SPEC: &[Field] = &[
    Field::one(1, "podSelector", Ty::Msg(LABEL_SELECTOR)),
    Field::list(2, "ingress", Ty::Msg(NETWORK_POLICY_INGRESS_RULE)),
    Field::list(3, "egress", Ty::Msg(NETWORK_POLICY_EGRESS_RULE)),
    Field::list(4, "policyTypes", Ty::Str),
];

/// networking/v1 NetworkPolicyIngressRule.
pub(crate) const NETWORK_POLICY_INGRESS_RULE: &[Field] = &[
    Field::list(1, "ports", Ty::Msg(NETWORK_POLICY_PORT)),
    Field::list(2, "from", Ty::Msg(NETWORK_POLICY_PEER)),
];

/// networking/v1 NetworkPolicyEgressRule.
pub(crate) const NETWORK_POLICY_EGRESS_RULE: &[Field] = &[
    Field::list(1, "ports", Ty::Msg(NETWORK_POLICY_PORT)),
    Field::list(2, "to", Ty::Msg(NETWORK_POLICY_PEER)),
];

/// networking/v1 NetworkPolicyPeer.
pub(crate) const NETWORK_POLICY_PEER: &[Field] = &[
    Field::one(1, "podSelector", Ty::Msg(LABEL_SELECTOR)),
    Field::one(2, "namespaceSelector", Ty::Msg(LABEL_SELECTOR)),
    Field::one(3, "ipBlock", Ty::Msg(IP_BLOCK)),
];

/// networking/v1 IPBlock.
pub(crate) const IP_BLOCK: &[Field] = &[
    Field::one(1, "cidr", Ty::Str),
    Field::list(2, "except", Ty::Str),
];

/// networking/v1 NetworkPolicyPort.
pub(crate) const NETWORK_POLICY_PORT: &[Field] = &[
    Field::one(1, "protocol", Ty::Str),
    Field::one(2, "port", Ty::IntOrString),
    Field::one(3, "endPort", Ty::Int32),
];

// ---------------------------------------------------------------------------
// k8s.io/api/rbac/v1
// ---------------------------------------------------------------------------

/// rbac/v1 Role.
pub(crate) const ROLE: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::list(2, "rules", Ty::Msg(POLICY_RULE)),
];

/// rbac/v1 ClusterRole.
pub(crate) const CLUSTER_ROLE: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::list(2, "rules", Ty::Msg(POLICY_RULE)),
    Field::one(3, "aggregationRule", Ty::Msg(AGGREGATION_RULE)),
];

/// rbac/v1 AggregationRule.
pub(crate) const AGGREGATION_RULE: &[Field] = &[Field::list(
    1,
    "clusterRoleSelectors",
    Ty::Msg(LABEL_SELECTOR),
)];

/// rbac/v1 PolicyRule.
pub(crate) const POLICY_RULE: &[Field] = &[
    Field::list(1, "verbs", Ty::Str),
    Field::list(2, "apiGroups", Ty::Str),
    Field::list(3, "resources", Ty::Str),
    Field::list(4, "resourceNames", Ty::Str),
    Field::list(5, "nonResourceURLs", Ty::Str),
];

/// rbac/v1 RoleBinding.
pub(crate) const ROLE_BINDING: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::list(2, "subjects", Ty::Msg(SUBJECT)),
    Field::one(3, "roleRef", Ty::Msg(ROLE_REF)),
];

/// rbac/v1 ClusterRoleBinding.
pub(crate) const CLUSTER_ROLE_BINDING: &[Field] = &[
    Field::one(1, "metadata", Ty::Msg(OBJECT_META)),
    Field::list(2, "subjects", Ty::Msg(SUBJECT)),
    Field::one(3, "roleRef", Ty::Msg(ROLE_REF)),
];

/// rbac/v1 Subject.
pub(crate) const SUBJECT: &[Field] = &[
    Field::one(1, "kind", Ty::Str),
    Field::one(2, "apiGroup", Ty::Str),
    Field::one(3, "name", Ty::Str),
    Field::one(4, "namespace", Ty::Str),
];

/// rbac/v1 RoleRef.
pub(crate) const ROLE_REF: &[Field] = &[
    Field::one(1, "apiGroup", Ty::Str),
    Field::one(2, "kind", Ty::Str),
    Field::one(3, "name", Ty::Str),
];

// ---------------------------------------------------------------------------
// Top-level kinds
// ---------------------------------------------------------------------------

/// The kinds whose protobuf bodies are decoded: (apiVersion, kind, message).
pub(crate) const KINDS: &[(&str, &str, &[Field])] = &[
    ("v1", "Pod", POD),
    ("v1", "Namespace", NAMESPACE),
    ("v1", "ConfigMap", CONFIG_MAP),
    ("v1", "Secret", SECRET),
    ("v1", "ServiceAccount", SERVICE_ACCOUNT),
    ("v1", "Service", SERVICE),
    ("apps/v1", "Deployment", DEPLOYMENT),
    ("batch/v1", "Job", JOB),
    ("batch/v1", "CronJob", CRON_JOB),
    ("policy/v1", "PodDisruptionBudget", POD_DISRUPTION_BUDGET),
    ("networking.k8s.io/v1", "NetworkPolicy", NETWORK_POLICY),
    ("rbac.authorization.k8s.io/v1", "Role", ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", CLUSTER_ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", ROLE_BINDING),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        CLUSTER_ROLE_BINDING,
    ),
];

#[cfg(test)]
mod tests {
    use super::super::decode;
    use serde_json::json;

    fn field(num: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(num << 3).expect("a small field number") | wire];
        if wire == 2 {
            out.push(u8::try_from(payload.len()).expect("a short payload"));
        }
        out.extend_from_slice(payload);
        out
    }

    fn msg(num: u32, parts: &[Vec<u8>]) -> Vec<u8> {
        field(num, 2, &parts.concat())
    }

    #[test]
    fn a_network_policy_decodes() {
        let meta = msg(1, &[field(1, 2, b"db")]);
        let selector = msg(1, &[msg(1, &[field(1, 2, b"app"), field(2, 2, b"db")])]);
        // port 5432 (intVal), endPort 5440, protocol TCP.
        let port = msg(
            1,
            &[
                field(1, 2, b"TCP"),
                msg(2, &[field(1, 0, &[0]), field(2, 0, &[0xb8, 0x2a])]),
                field(3, 0, &[0xc0, 0x2a]),
            ],
        );
        let block = msg(
            2,
            &[msg(
                3,
                &[field(1, 2, b"10.0.0.0/8"), field(2, 2, b"10.1.0.0/16")],
            )],
        );
        let spec = msg(
            2,
            &[selector, msg(2, &[port, block]), field(4, 2, b"Ingress")],
        );
        let type_meta = msg(
            1,
            &[
                field(1, 2, b"networking.k8s.io/v1"),
                field(2, 2, b"NetworkPolicy"),
            ],
        );
        let body = [b"k8s\0".to_vec(), type_meta, msg(2, &[meta, spec])].concat();
        let value = decode(&body).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            value["spec"],
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"ports": [{"protocol": "TCP", "port": 5432, "endPort": 5440}],
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
                "policyTypes": ["Ingress"]})
        );
    }
}
