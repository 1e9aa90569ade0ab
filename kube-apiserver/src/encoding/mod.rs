//! Encoding: objects encoded once and shared, protobuf request bodies, `Table` responses, and
//! errors as `Status` objects.

pub(crate) mod encoded;
pub(crate) mod protobuf;
pub(crate) mod status;
pub(crate) mod table;
