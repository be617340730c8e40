//! Integration tests of `nodeguard scan` against real runc containers.
