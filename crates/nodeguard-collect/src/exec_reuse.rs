//! What exec reads keep from one to the next and from the last full pass, so that reading an
//! exec'd process costs as much as that process, not as much as its container or the node.
//!
//! - The host's facts (`cap_last_cap`, pid 1's namespaces) are the last full pass's: they
//!   do not change between passes, and the next full pass reads them again.
//! - A container the last full pass built is taken from it (runtime, limits, device
//!   access, sandbox) with the exec'd pids: its cgroup limit files are not read again per
//!   exec. The exec pass keeps what the full scan said of known containers anyway.
//! - Container roots are kept per mount namespace ([`MountRoots`]): `mountinfo` is parsed
//!   again only when the namespace's mount table changed.
//! - Where an executable was found in its container's layers is kept across exec reads
//!   (bounded), keyed like the full pass's cache by the running file.

use crate::mount_roots::{KeptMountNamespaces, MountRoots};
use crate::pass::Reuse;
use nodeguard_model::{Container, Namespaces};
use std::collections::HashMap;
use std::sync::Mutex;

/// Layer lookups kept across exec reads at most; past it they start over.
pub(crate) const LOCATED_MAX: usize = 4096;

/// The state exec reads share (see the module documentation).
#[derive(Debug)]
pub(crate) struct ExecReuse {
    /// The per-pass state of exec reads: its layer lookups and limit files persist; the
    /// handles and processes of a read are dropped after it.
    pub(crate) reuse: Reuse,
    pub(crate) roots: KeptMountNamespaces,
    /// `cap_last_cap` and pid 1's namespaces as the last full pass read them.
    pub(crate) host: Option<(u32, Namespaces)>,
    /// The containers of the last full pass, by id.
    pub(crate) known: HashMap<String, Container>,
}

/// What one exec read takes from [`ExecReuse`].
pub(crate) struct ExecFacts<'a> {
    pub(crate) roots: &'a Mutex<MountRoots>,
    pub(crate) host: Option<&'a (u32, Namespaces)>,
    pub(crate) known: &'a HashMap<String, Container>,
}

impl Default for ExecReuse {
    fn default() -> ExecReuse {
        ExecReuse {
            reuse: Reuse::new(1),
            roots: KeptMountNamespaces::default(),
            host: None,
            known: HashMap::new(),
        }
    }
}

impl ExecReuse {
    /// After a full pass: its host facts and containers replace the kept ones, and mount
    /// namespaces no exec read looked up since the last full pass are let go.
    pub(crate) fn full_pass_done(
        &mut self,
        cap_last_cap: u32,
        host_namespaces: &Namespaces,
        containers: &[Container],
    ) {
        self.host = Some((cap_last_cap, host_namespaces.clone()));
        self.known = containers
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        self.roots
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_unused();
    }

    /// `mountinfo` tables parsed by exec reads so far.
    pub(crate) fn mountinfo_parses(&self) -> u64 {
        self.roots
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .parses()
    }
}
