//! End-to-end tests of `nodeguard run` against real runc containers and a real Prometheus.
