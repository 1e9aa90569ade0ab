//! Admission: what the server changes and checks in an object before it is stored —
//! defaulting, validation, and the ServiceAccount token volume pods get.

pub(crate) mod defaults;
pub(crate) mod serviceaccounts;
pub(crate) mod validation;
