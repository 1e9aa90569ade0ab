//! [`Status`]: what an extension point says about a pod (and a node), as in kube-scheduler.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The outcome class of a plugin call. It decides what happens next: an `Unschedulable` node may
/// be made to fit by preemption, an `UnschedulableAndUnresolvable` one may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The pod may go ahead.
    Success,
    /// The pod does not fit now; removing pods (preemption) might make it fit.
    Unschedulable,
    /// The pod does not fit, and preempting pods would not change that.
    UnschedulableAndUnresolvable,
    /// The plugin failed internally.
    Error,
    /// Permit only: hold the pod until it is allowed or rejected.
    Wait,
    /// The plugin has nothing to say for this pod; its later extension points are skipped.
    Skip,
}

/// A code, the reasons behind it (Kubernetes' wording, counted per node in the
/// "0/N nodes are available" message) and the plugin that said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    /// The first reason inline and the rest in `more`: a rejection with one static reason (the
    /// common case, once per rejected node per cycle) then allocates nothing.
    reason: Option<Cow<'static, str>>,
    more: Vec<Cow<'static, str>>,
    plugin: Option<Arc<str>>,
}

impl Status {
    /// A status with `code` and no reason.
    pub const fn new(code: Code) -> Self {
        Self {
            code,
            reason: None,
            more: Vec::new(),
            plugin: None,
        }
    }

    /// Success (allocation-free: filters return it on the hot path).
    pub const fn success() -> Self {
        Self::new(Code::Success)
    }

    /// Skip.
    pub const fn skip() -> Self {
        Self::new(Code::Skip)
    }

    /// Unschedulable with one reason.
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Unschedulable).with_reason(reason)
    }

    /// UnschedulableAndUnresolvable with one reason.
    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::UnschedulableAndUnresolvable).with_reason(reason)
    }

    /// Error with one reason.
    pub fn error(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Code::Error).with_reason(reason)
    }

    /// Adds a reason.
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        if self.reason.is_none() {
            self.reason = Some(reason.into());
        } else {
            self.more.push(reason.into());
        }
        self
    }

    /// Records which plugin said this (the framework does it for plugins).
    pub fn with_plugin(mut self, plugin: impl Into<Arc<str>>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.reason.iter().chain(&self.more).map(|r| r.as_ref())
    }

    /// The plugin that produced this status, when known.
    pub fn plugin(&self) -> Option<&str> {
        self.plugin.as_deref()
    }

    /// Whether the code is Success.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the code is Skip.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Whether the pod was rejected (either unschedulable code).
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.code)?;
        if let Some(p) = &self.plugin {
            write!(f, " ({p})")?;
        }
        if self.reason.is_some() {
            let reasons: Vec<&str> = self.reasons().collect();
            write!(f, ": {}", reasons.join(", "))?;
        }
        Ok(())
    }
}
