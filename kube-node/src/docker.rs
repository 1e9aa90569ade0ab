//! `DockerRuntime`: pods and containers on the Docker Engine API.
