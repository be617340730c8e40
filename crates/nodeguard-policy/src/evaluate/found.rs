//! The findings of one evaluation, one per `(kind, container, subject)`, and what is done
//! to them once every rule has run.

use super::fold::{aggregate_floods, exempts, fold_into_privileged};
use crate::policy::Policy;
use nodeguard_model::{escape_controls, Container, Finding, FindingKind};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

type Key = (FindingKind, Option<String>, String);

/// A finding's identity as [`Found`] looks it up: a [`Key`] in the map, borrowed parts for a
/// lookup, so that asking whether a finding would be kept allocates nothing (it is asked for
/// every process and rule, and mostly answered no).
trait KeyView {
    fn view(&self) -> (FindingKind, Option<&str>, &str);
}

impl KeyView for Key {
    fn view(&self) -> (FindingKind, Option<&str>, &str) {
        (self.0, self.1.as_deref(), &self.2)
    }
}

impl KeyView for (FindingKind, Option<&str>, &str) {
    fn view(&self) -> (FindingKind, Option<&str>, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

// Ordered as `Key` is (a tuple orders field by field; `Option<String>` as `Option<&str>`).
impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.view().cmp(&other.view())
    }
}

/// The findings so far, one per `(kind, container, subject)`, keeping the lowest pid.
/// Of two findings with the same key, the one of lower rank is kept: a pid beats none, a
/// lower pid beats a higher one.
fn rank(pid: Option<i32>) -> (u8, i32) {
    pid.map_or((1, 0), |p| (0, p))
}

pub(super) struct Found<'p> {
    policy: &'p Policy,
    by_key: BTreeMap<Key, Finding>,
}

impl<'p> Found<'p> {
    pub(super) fn new(policy: &'p Policy) -> Self {
        Found {
            policy,
            by_key: BTreeMap::new(),
        }
    }

    /// Whether a finding of `kind` on (`container`, `subject`) from process `pid` would be
    /// kept by [`Found::add`]: its kind is enabled and no finding with that key from a lower
    /// pid is in yet.
    pub(super) fn keeps(
        &self,
        kind: FindingKind,
        container: Option<&str>,
        subject: &str,
        pid: i32,
    ) -> bool {
        self.would_keep(kind, container, subject, Some(pid))
    }

    /// [`Found::keeps`] for a finding that may have no pid (a pid beats none).
    fn would_keep(
        &self,
        kind: FindingKind,
        container: Option<&str>,
        subject: &str,
        pid: Option<i32>,
    ) -> bool {
        if !self.policy.is_enabled(kind) {
            return false;
        }
        let key: &dyn KeyView = &(kind, container, subject);
        self.by_key
            .get(key)
            .is_none_or(|existing| rank(existing.pid) > rank(pid))
    }

    pub(super) fn add(&mut self, finding: Finding) {
        let kept = self.would_keep(
            finding.kind,
            finding.container_id.as_deref(),
            &finding.subject,
            finding.pid,
        );
        if kept {
            let key = (
                finding.kind,
                finding.container_id.clone(),
                finding.subject.clone(),
            );
            self.by_key.insert(key, finding);
        }
    }

    pub(super) fn finish(self, containers: &HashMap<&str, &Container>) -> Vec<Finding> {
        let policy = self.policy;
        let mut out: Vec<Finding> = self
            .by_key
            .into_values()
            .filter_map(|mut f| {
                let pod = f
                    .container_id
                    .as_deref()
                    .and_then(|id| containers.get(id))
                    .and_then(|c| c.pod.as_ref());
                if policy.exemptions.iter().any(|e| exempts(e, f.kind, pod)) {
                    return None;
                }
                if let Some(severity) = policy.severity.get(&f.kind) {
                    f.severity = *severity;
                }
                if let Some(pod) = pod {
                    f.namespace = Some(pod.namespace.clone());
                    f.pod = Some(pod.name.clone());
                    f.container_name = pod.container_name.clone();
                }
                f.message = escape_controls(&f.message);
                Some(f)
            })
            .collect();
        out.sort_by(|a, b| {
            (a.kind, &a.container_id, &a.subject).cmp(&(b.kind, &b.container_id, &b.subject))
        });
        let out = fold_into_privileged(out);
        let mut out = aggregate_floods(out);
        out.sort_by(|a, b| {
            (Reverse(a.severity), a.kind, &a.container_id, &a.subject).cmp(&(
                Reverse(b.severity),
                b.kind,
                &b.container_id,
                &b.subject,
            ))
        });
        out
    }
}
