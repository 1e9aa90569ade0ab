#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod cron;
pub mod events;
pub mod fields;
pub mod informer;
pub mod kind;
pub mod manifest;
pub mod object;
pub mod orchestrator;
pub mod proxy;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod runtime;
pub mod scheduler;
pub mod selector;
pub mod store;
pub mod typed;
pub mod workqueue;

pub use k8s_openapi;

pub use controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
pub use informer::{Informer, InformerEvent, InformerFactory};
pub use kind::{KindInfo, Registry};
pub use object::{DynamicObject, GroupKind, ObjectKey, ObjectRef};
pub use orchestrator::{Component, ComponentContext, Orchestrator, OrchestratorError};
pub use proxy::{Proxy, ProxyError, ServiceTable};
pub use quantity::{Quantity, QuantityError};
pub use runtime::{AuthConfig, Image, ImageFsInfo, PulledImage, Runtime, RuntimeError};
pub use scheduler::{ScheduleError, Scheduler, Snapshot};
pub use selector::{FieldSelector, Selector, SelectorError};
pub use store::{Store, StoreError, WatchEvent};
pub use typed::Api;
pub use workqueue::WorkQueue;
