//! End-to-end: `nodeguard run` against real runc containers and a fake Kubernetes API server.
