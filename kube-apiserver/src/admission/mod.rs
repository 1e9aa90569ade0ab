//! Admission: what the server changes and checks in an object before it is stored —
//! defaulting, validation, and the ServiceAccount token volume pods get.

pub(crate) mod chain;
pub(crate) mod default_storage_class;
pub(crate) mod defaults;
mod limit_range;
mod priority;
pub(crate) mod refused;
mod resource_quota;
pub(crate) mod serviceaccounts;
pub(crate) mod storage_protection;
pub(crate) mod system_priority;
pub(crate) mod validation;
