//! Streaming: watches (and the hub plain watches share), `pods/log` and `pods/exec` proxied
//! to the node agent.

pub(crate) mod exec;
pub(crate) mod logs;
pub(crate) mod watch;
pub(crate) mod watch_hub;
