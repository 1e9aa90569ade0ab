//! Image pulls from OCI registries into a content-addressed store on disk, shared by the runc
//! and host-process runtimes.
