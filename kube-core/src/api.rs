//! Re-exports of the Kubernetes kinds this project serves, from `k8s-openapi` (Kubernetes 1.33
//! wire format), so our JSON is Kubernetes' JSON.

pub use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
pub use k8s_openapi::api::batch::v1::Job;
pub use k8s_openapi::api::coordination::v1::Lease;
pub use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::api::policy::v1::PodDisruptionBudget;
pub use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference,
};
