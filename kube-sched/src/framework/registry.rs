//! [`Registry`]: named plugin factories; profiles name the plugins they use.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::plugin::Plugin;
use crate::error::SchedError;

/// Builds a plugin from its arguments (`null` when the profile gives none).
pub type PluginFactory = Arc<dyn Fn(&Value) -> Result<Arc<dyn Plugin>, SchedError> + Send + Sync>;

/// Plugin factories by name. Registering a name twice is an error, so a user plugin cannot
/// silently replace a default one.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, PluginFactory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The default plugins (see [`crate::plugins`]).
    pub fn with_defaults() -> Self {
        crate::plugins::default_registry()
    }

    /// Adds a factory under `name`; fails if the name is taken.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&Value) -> Result<Arc<dyn Plugin>, SchedError> + Send + Sync + 'static,
    ) -> Result<(), SchedError> {
        let name = name.into();
        if self.factories.contains_key(&name) {
            return Err(SchedError::DuplicatePlugin(name));
        }
        self.factories.insert(name, Arc::new(factory));
        Ok(())
    }

    /// Builds the plugin `name` with `args`.
    pub fn build(&self, name: &str, args: &Value) -> Result<Arc<dyn Plugin>, SchedError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| SchedError::UnknownPlugin(name.to_string()))?;
        factory(args)
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}
