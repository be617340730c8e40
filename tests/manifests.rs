//! The manifests in manifests/ checked against the Kubernetes API types, against each other and
//! against the code that runs with them.
