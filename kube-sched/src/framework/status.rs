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
#[derive(Clone, Debug)]
pub struct Status {
    code: Code,
    /// The first reason when it is static: a rejection with one static reason (the common case,
    /// once per rejected node per cycle) allocates nothing.
    reason: Option<&'static str>,
    /// The plugin, shared: attributing a rejection (once per rejected node when nothing fits)
    /// allocates nothing either.
    plugin: Option<Arc<str>>,
    /// Further (or owned) reasons, boxed so that dropping a reason-less status (every Filter
    /// call on a fitting node) is two checks; one word, as every Filter call returns a status.
    #[allow(clippy::box_collection)]
    detail: Option<Box<Vec<Cow<'static, str>>>>,
}

impl PartialEq for Status {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.plugin() == other.plugin()
            && self.reasons().eq(other.reasons())
    }
}

impl Eq for Status {}

impl Status {
    /// A status with `code` and no reason.
    pub const fn new(code: Code) -> Self {
        Self {
            code,
            reason: None,
            plugin: None,
            detail: None,
        }
    }

    /// `code` with one static reason, built in place (rejections on the hot path).
    #[inline]
    pub(crate) const fn with_static(code: Code, reason: &'static str) -> Self {
        Self {
            code,
            reason: Some(reason),
            plugin: None,
            detail: None,
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
        let reason = reason.into();
        let no_owned = self.detail.as_ref().is_none_or(|d| d.is_empty());
        match reason {
            Cow::Borrowed(r) if self.reason.is_none() && no_owned => self.reason = Some(r),
            reason => self.detail.get_or_insert_default().push(reason),
        }
        self
    }

    /// Records which plugin said this (the framework does it for plugins).
    pub fn with_plugin(mut self, plugin: impl Into<Arc<str>>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    /// Drops the status, inline and without a call when it carries nothing owned (the hot
    /// path checks millions of reason-less statuses per second).
    #[inline]
    pub(crate) fn discard(self) {
        if self.detail.is_some() || self.plugin.is_some() {
            drop(self);
        } else {
            // Nothing to free: the code and a `&'static str`.
            std::mem::forget(self);
        }
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        let more = self.detail.iter().flat_map(|d| d.iter());
        self.reason.into_iter().chain(more.map(|r| r.as_ref()))
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
        if let Some(p) = self.plugin() {
            write!(f, " ({p})")?;
        }
        if self.reasons().next().is_some() {
            let reasons: Vec<&str> = self.reasons().collect();
            write!(f, ": {}", reasons.join(", "))?;
        }
        Ok(())
    }
}
