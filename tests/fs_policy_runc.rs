//! Filesystem checks and the policy against real runc containers, hostile ones included.
