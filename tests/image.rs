//! The Dockerfile, and the binary it builds run as the only file of a container.
