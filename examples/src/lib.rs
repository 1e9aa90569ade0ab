//! Examples of composing kube-parts crates; see the `[[example]]` entries.
