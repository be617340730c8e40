//! What the API server's authorizer sees of a request, and a ClusterRole's rules applied to
//! it.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use std::collections::BTreeMap;
use std::path::Path;

/// What the API server's authorizer sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/log` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Attributes {
    /// `verb group/resource namespace/name`, `-` for what is absent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        write!(
            f,
            "{} {}/{} {}/{}",
            self.verb,
            self.group,
            self.resource,
            or_dash(&self.namespace),
            or_dash(&self.name)
        )
    }
}

/// The RBAC attributes of a resource request, as the API server derives them
/// (`k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory`). `None` for non-resource URLs.
pub fn attributes(
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Option<Attributes> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let resource = match rest {
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] if !resource.is_empty() => resource.to_string(),
        _ => return None,
    };
    let name = rest.get(1).map(|n| n.to_string());
    let watch_param = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match method {
        "GET" | "HEAD" if legacy_watch || watch_param => "watch",
        "GET" | "HEAD" if name.is_some() => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if name.is_some() => "delete",
        "DELETE" => "deletecollection",
        _ => return None,
    };
    Some(Attributes {
        verb: verb.into(),
        group: group.into(),
        resource,
        namespace,
        name,
    })
}

/// The rules of a ClusterRole, as RBAC evaluates them.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub user: String,
    pub rules: Vec<PolicyRule>,
}

impl Authorizer {
    /// The rules of the ClusterRole in `file` (the shipped `manifests/clusterrole.yaml`),
    /// granted to `user`.
    pub fn from_cluster_role_file(file: &Path, user: &str) -> Authorizer {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let role: ClusterRole = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a ClusterRole: {e}", file.display()));
        let rules = role.rules.unwrap_or_default();
        assert!(!rules.is_empty(), "{} grants nothing", file.display());
        Authorizer {
            user: user.to_string(),
            rules,
        }
    }

    /// Everything, for `user` (a cluster admin): for tests of what the server validates
    /// rather than what it authorizes.
    pub fn allow_all(user: &str) -> Authorizer {
        Authorizer {
            user: user.to_string(),
            rules: vec![PolicyRule {
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                verbs: vec!["*".into()],
                ..PolicyRule::default()
            }],
        }
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        self.rules.iter().any(|rule| {
            has(rule.api_groups.as_deref().unwrap_or_default(), &a.group)
                && has(rule.resources.as_deref().unwrap_or_default(), &a.resource)
                && has(&rule.verbs, &a.verb)
                && rule.resource_names.as_ref().is_none_or(|names| {
                    names.is_empty() || a.name.as_ref().is_some_and(|n| names.contains(n))
                })
        })
    }
}
