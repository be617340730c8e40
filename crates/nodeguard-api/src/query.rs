//! Query parameters of the list endpoints: parsed by the server from the query string, built
//! by the client and encoded into one. Both sides share these types, so what the client sends
//! is what the server understands.

use crate::Error;
use nodeguard_model::{
    Container, ExecObservation, FindingKind, Process, Severity, Timestamp, TrackedFinding,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Filters of `GET /v1/findings`, all optional and AND-ed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingsQuery {
    /// Kubernetes namespace of the finding's pod.
    pub namespace: Option<String>,
    /// Name of the finding's pod.
    pub pod: Option<String>,
    /// A container id, a prefix of it (12 hex digits or more, `containerd://` and the like
    /// allowed in front), a container name, or `host`.
    pub container: Option<String>,
    pub kind: Option<FindingKind>,
    /// The minimum severity: `High` returns high and critical findings.
    pub min_severity: Option<Severity>,
    /// Findings first seen at or after this time.
    pub since: Option<Timestamp>,
}

/// Filters of `GET /v1/containers`, all optional and AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainersQuery {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// As in [`FindingsQuery::container`].
    pub container: Option<String>,
}

/// Filters of `GET /v1/processes`, all optional and AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessesQuery {
    /// As in [`FindingsQuery::container`]; `host` selects the processes outside containers.
    pub container: Option<String>,
    /// SHA-256 of the executable, 64 hex digits: "where does this binary run?".
    pub sha256: Option<String>,
    pub pid: Option<i32>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

/// Filters of `GET /v1/execs`, the history of exec-time observations, all optional and
/// AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecsQuery {
    /// Observations made at or after this: a time, or how long ago.
    pub since: Option<Since>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// As in [`FindingsQuery::container`]; `host` selects processes outside containers.
    pub container: Option<String>,
}

/// The start of a history query: a time (RFC 3339), or an age the agent subtracts from its
/// own clock (`10m`), so a client's clock skew does not shift the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    At(Timestamp),
    Ago(Duration),
}

impl Since {
    /// `10m`, `90s`, `2h`, `1d`, or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Since, String> {
        let text = text.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let unit = match &text[digits..] {
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        };
        if let (true, Some(unit)) = (digits > 0, unit) {
            let n: u64 = text[..digits]
                .parse()
                .map_err(|_| format!("{text:?} is too large"))?;
            return n
                .checked_mul(unit)
                .map(|secs| Since::Ago(Duration::from_secs(secs)))
                .ok_or_else(|| format!("{text:?} is too large"));
        }
        parse_time(text)
            .map(Since::At)
            .map_err(|_| format!("{text:?} is neither a duration like 10m nor an RFC 3339 time"))
    }

    /// The time it stands for, seen from `now`.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => Timestamp(
                now.0
                    .checked_sub(d)
                    .filter(|t| *t >= std::time::UNIX_EPOCH)
                    .unwrap_or(std::time::UNIX_EPOCH),
            ),
        }
    }
}

impl std::fmt::Display for Since {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Since::At(t) => write!(f, "{t}"),
            Since::Ago(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

impl ExecsQuery {
    /// The parameter names `GET /v1/execs` accepts.
    pub const PARAMETERS: &'static [&'static str] = &["since", "namespace", "pod", "container"];

    /// Parses a raw (percent-encoded) query string, without the `?`.
    pub fn parse(raw: Option<&str>) -> Result<ExecsQuery, Error> {
        let mut params = Params::parse(raw, Self::PARAMETERS)?;
        Ok(ExecsQuery {
            since: params
                .take("since")
                .map(|v| Since::parse(&v).map_err(|e| invalid("since", e)))
                .transpose()?,
            namespace: params.take("namespace"),
            pod: params.take("pod"),
            container: params.take("container"),
        })
    }

    /// The query string (without `?`) that [`ExecsQuery::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        encode(&[
            ("since", self.since.map(|s| s.to_string())),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
        ])
    }

    /// Whether an observation passes the filters other than `since`.
    pub fn matches(&self, o: &ExecObservation) -> bool {
        let pod = o.pod.as_ref();
        equal(&self.namespace, pod.map(|p| p.namespace.as_str()))
            && equal(&self.pod, pod.map(|p| p.name.as_str()))
            && self.container.as_deref().is_none_or(|sel| {
                container_matches(
                    sel,
                    o.process.container_id.as_deref(),
                    pod.and_then(|p| p.container_name.as_deref()),
                )
            })
    }
}

impl FindingsQuery {
    /// The parameter names `GET /v1/findings` accepts.
    pub const PARAMETERS: &'static [&'static str] =
        &["namespace", "pod", "container", "kind", "severity", "since"];

    /// Parses a raw (percent-encoded) query string, without the `?`.
    pub fn parse(raw: Option<&str>) -> Result<FindingsQuery, Error> {
        let mut params = Params::parse(raw, Self::PARAMETERS)?;
        Ok(FindingsQuery {
            namespace: params.take("namespace"),
            pod: params.take("pod"),
            container: params.take("container"),
            kind: params
                .take("kind")
                .map(|v| v.parse::<FindingKind>().map_err(|e| invalid("kind", e)))
                .transpose()?,
            min_severity: params
                .take("severity")
                .map(|v| v.parse::<Severity>().map_err(|e| invalid("severity", e)))
                .transpose()?,
            since: params
                .take("since")
                .map(|v| parse_time(&v).map_err(|e| invalid("since", e)))
                .transpose()?,
        })
    }

    /// The query string (without `?`) that [`FindingsQuery::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        encode(&[
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
            ("kind", self.kind.map(|k| k.as_str().to_string())),
            (
                "severity",
                self.min_severity.map(|s| s.as_str().to_string()),
            ),
            ("since", self.since.map(|t| t.to_string())),
        ])
    }

    /// Whether a finding passes every filter. `container` is the finding's container in the
    /// report, which supplies pod names the finding itself lacks.
    pub fn matches(&self, tracked: &TrackedFinding, container: Option<&Container>) -> bool {
        let f = &tracked.finding;
        let pod = container.and_then(|c| c.pod.as_ref());
        let namespace = f.namespace.as_deref().or(pod.map(|p| p.namespace.as_str()));
        let pod_name = f.pod.as_deref().or(pod.map(|p| p.name.as_str()));
        let container_name = f
            .container_name
            .as_deref()
            .or(pod.and_then(|p| p.container_name.as_deref()));
        equal(&self.namespace, namespace)
            && equal(&self.pod, pod_name)
            && self
                .container
                .as_deref()
                .is_none_or(|sel| container_matches(sel, f.container_id.as_deref(), container_name))
            && self.kind.is_none_or(|k| k == f.kind)
            && self.min_severity.is_none_or(|s| f.severity >= s)
            && self.since.is_none_or(|t| tracked.first_seen >= t)
    }
}

impl ContainersQuery {
    /// The parameter names `GET /v1/containers` accepts.
    pub const PARAMETERS: &'static [&'static str] = &["namespace", "pod", "container"];

    /// Parses a raw (percent-encoded) query string, without the `?`.
    pub fn parse(raw: Option<&str>) -> Result<ContainersQuery, Error> {
        let mut params = Params::parse(raw, Self::PARAMETERS)?;
        Ok(ContainersQuery {
            namespace: params.take("namespace"),
            pod: params.take("pod"),
            container: params.take("container"),
        })
    }

    /// The query string (without `?`) that [`ContainersQuery::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        encode(&[
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
        ])
    }

    pub fn matches(&self, c: &Container) -> bool {
        let pod = c.pod.as_ref();
        equal(&self.namespace, pod.map(|p| p.namespace.as_str()))
            && equal(&self.pod, pod.map(|p| p.name.as_str()))
            && self.container.as_deref().is_none_or(|sel| {
                container_matches(
                    sel,
                    Some(&c.id),
                    pod.and_then(|p| p.container_name.as_deref()),
                )
            })
    }
}

impl ProcessesQuery {
    /// The parameter names `GET /v1/processes` accepts.
    pub const PARAMETERS: &'static [&'static str] =
        &["container", "sha256", "pid", "namespace", "pod"];

    /// Parses a raw (percent-encoded) query string, without the `?`.
    pub fn parse(raw: Option<&str>) -> Result<ProcessesQuery, Error> {
        let mut params = Params::parse(raw, Self::PARAMETERS)?;
        Ok(ProcessesQuery {
            container: params.take("container"),
            sha256: params
                .take("sha256")
                .map(|v| parse_sha256(&v).map_err(|e| invalid("sha256", e)))
                .transpose()?,
            pid: params
                .take("pid")
                .map(|v| match v.trim().parse::<i32>() {
                    Ok(pid) if pid > 0 => Ok(pid),
                    _ => Err(invalid("pid", format!("{v:?} is not a process id"))),
                })
                .transpose()?,
            namespace: params.take("namespace"),
            pod: params.take("pod"),
        })
    }

    /// The query string (without `?`) that [`ProcessesQuery::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        encode(&[
            ("container", self.container.clone()),
            ("sha256", self.sha256.clone()),
            ("pid", self.pid.map(|p| p.to_string())),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
        ])
    }

    /// Whether a process passes every filter; `container` is its container in the report.
    pub fn matches(&self, p: &Process, container: Option<&Container>) -> bool {
        let pod = container.and_then(|c| c.pod.as_ref());
        equal(&self.namespace, pod.map(|p| p.namespace.as_str()))
            && equal(&self.pod, pod.map(|p| p.name.as_str()))
            && self.container.as_deref().is_none_or(|sel| {
                container_matches(
                    sel,
                    p.container_id.as_deref(),
                    pod.and_then(|p| p.container_name.as_deref()),
                )
            })
            && self.sha256.as_deref().is_none_or(|want| {
                p.sha256
                    .as_deref()
                    .is_some_and(|have| have.eq_ignore_ascii_case(want))
            })
            && self.pid.is_none_or(|pid| p.pid == pid)
    }
}

/// Whether a container selector picks a container (or the host, when `id` is `None`).
///
/// A selector matches the full id, a prefix of at least 12 hex digits (the short id `docker
/// ps` and `crictl ps` print), the container name from the pod spec, or — as `host` — every
/// process or finding outside containers. A `containerd://`-style prefix, as `kubectl`
/// prints container ids, is ignored.
pub fn container_matches(selector: &str, id: Option<&str>, name: Option<&str>) -> bool {
    let selector = selector.trim();
    if name == Some(selector) {
        return true;
    }
    let Some(id) = id else {
        return selector == "host";
    };
    let bare = selector
        .split_once("://")
        .map_or(selector, |(_, rest)| rest)
        .to_ascii_lowercase();
    id == bare
        || (bare.len() >= 12
            && bare.bytes().all(|b| b.is_ascii_hexdigit())
            && id.starts_with(&bare))
}

/// Parses an RFC 3339 time: `2026-11-22T10:00:00Z`, with fractions, or with a numeric offset
/// (`+02:00`; a `+` that arrived as a space because it was not percent-encoded is taken back).
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let n = bytes.len();
    let has_offset = n > 6
        && matches!(bytes[n - 6], b'+' | b'-' | b' ')
        && bytes[n - 7].is_ascii_digit()
        && bytes[n - 5..n - 3].iter().all(u8::is_ascii_digit)
        && bytes[n - 3] == b':'
        && bytes[n - 2..].iter().all(u8::is_ascii_digit)
        // A date-time has a 'T' or ' ' between date and time before the offset.
        && text[..n - 6].len() > 10;
    if !has_offset {
        return Timestamp::parse(text);
    }
    let hours: u64 = text[n - 5..n - 3].parse().map_err(|_| bad_time(text))?;
    let minutes: u64 = text[n - 2..].parse().map_err(|_| bad_time(text))?;
    if hours > 23 || minutes > 59 {
        return Err(bad_time(text));
    }
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = Timestamp::parse(&format!("{}Z", &text[..n - 6]))?;
    // Local time = UTC + offset, so UTC = local - offset.
    let utc = if bytes[n - 6] == b'-' {
        local.0.checked_add(offset)
    } else {
        local.0.checked_sub(offset)
    };
    utc.map(Timestamp).ok_or_else(|| bad_time(text))
}

fn bad_time(text: &str) -> String {
    format!("not an RFC 3339 time {text:?}")
}

fn parse_sha256(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!("{value:?} is not a SHA-256 digest (64 hex digits)"))
    }
}

fn invalid(parameter: &'static str, reason: impl ToString) -> Error {
    Error::InvalidParameter {
        parameter,
        reason: reason.to_string(),
    }
}

fn equal(want: &Option<String>, have: Option<&str>) -> bool {
    want.as_deref().is_none_or(|w| have == Some(w))
}

fn encode(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// Decoded parameters of one query string, checked against the names an endpoint accepts.
struct Params(BTreeMap<&'static str, String>);

impl Params {
    fn parse(raw: Option<&str>, allowed: &'static [&'static str]) -> Result<Params, Error> {
        let mut known = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let Some(&name_static) = allowed.iter().find(|a| **a == name) else {
                // Refused at the first unknown name: the cost of a hostile query string is
                // one pass over it, whatever it holds.
                return Err(Error::UnknownParameters {
                    names: vec![name.chars().take(64).collect()],
                    allowed,
                });
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(invalid(name_static, "empty value"));
            }
            if known.insert(name_static, value.to_string()).is_some() {
                return Err(invalid(name_static, "given more than once"));
            }
        }
        Ok(Params(known))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn findings_query_round_trips_through_the_query_string() {
        let q = FindingsQuery {
            namespace: Some("kube system & more".into()),
            pod: Some("web-1".into()),
            container: Some("app".into()),
            kind: Some(FindingKind::BinaryDrift),
            min_severity: Some(Severity::High),
            since: Some(Timestamp::parse("2026-11-22T10:00:00.250Z").unwrap()),
        };
        let qs = q.to_query_string();
        assert!(qs.contains("kind=binary_drift"), "{qs}");
        assert_eq!(FindingsQuery::parse(Some(&qs)).unwrap(), q);
        assert_eq!(FindingsQuery::default().to_query_string(), "");
        assert_eq!(
            FindingsQuery::parse(None).unwrap(),
            FindingsQuery::default()
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused_by_name() {
        let err = FindingsQuery::parse(Some("namespace=a&nmespace=b&x=1&x=2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown query parameter \"nmespace\" (allowed: namespace, pod, container, kind, severity, since)"
        );
        let err = ProcessesQuery::parse(Some("pid=1&pid=2")).unwrap_err();
        assert!(
            err.to_string().contains("\"pid\": given more than once"),
            "{err}"
        );
        let err = ContainersQuery::parse(Some("pod=")).unwrap_err();
        assert!(err.to_string().contains("empty value"), "{err}");
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_value() {
        for (qs, needle) in [
            ("kind=root", "kind"),
            ("severity=urgent", "urgent"),
            ("since=yesterday", "yesterday"),
        ] {
            let err = FindingsQuery::parse(Some(qs)).unwrap_err();
            assert!(err.to_string().contains(needle), "{qs}: {err}");
        }
        for qs in ["sha256=abc", "pid=-1", "pid=one", &format!("sha256={ID}0")] {
            assert!(ProcessesQuery::parse(Some(qs)).is_err(), "{qs}");
        }
        let upper = ID.to_ascii_uppercase();
        let q = ProcessesQuery::parse(Some(&format!("sha256={upper}&pid=42"))).unwrap();
        assert_eq!(q.sha256.as_deref(), Some(ID));
        assert_eq!(q.pid, Some(42));
    }

    #[test]
    fn severity_and_kind_accept_the_spellings_users_type() {
        let q = FindingsQuery::parse(Some("severity=HIGH&kind=BinaryDrift")).unwrap();
        assert_eq!(q.min_severity, Some(Severity::High));
        assert_eq!(q.kind, Some(FindingKind::BinaryDrift));
    }

    #[test]
    fn container_selector_matches_id_short_id_name_and_host() {
        assert!(container_matches(ID, Some(ID), None));
        assert!(container_matches(&ID[..12], Some(ID), None));
        assert!(container_matches(&ID[..12].to_uppercase(), Some(ID), None));
        assert!(container_matches(
            &format!("containerd://{ID}"),
            Some(ID),
            None
        ));
        assert!(
            !container_matches(&ID[..11], Some(ID), None),
            "too short a prefix"
        );
        assert!(container_matches("app", Some(ID), Some("app")));
        assert!(!container_matches("ap", Some(ID), Some("app")));
        assert!(container_matches("host", None, None));
        assert!(!container_matches("host", Some(ID), None));
        assert!(!container_matches(&ID[..12], None, None));
    }

    #[test]
    fn exec_history_since_takes_an_age_or_a_time_and_round_trips() {
        let q =
            ExecsQuery::parse(Some("since=10m&namespace=shop&pod=web-0&container=host")).unwrap();
        assert_eq!(q.since, Some(Since::Ago(Duration::from_secs(600))));
        assert_eq!(ExecsQuery::parse(Some(&q.to_query_string())).unwrap(), q);
        let at = ExecsQuery::parse(Some("since=2026-11-22T10:00:00Z")).unwrap();
        assert_eq!(
            at.since,
            Some(Since::At(Timestamp::parse("2026-11-22T10:00:00Z").unwrap()))
        );
        assert_eq!(ExecsQuery::parse(Some(&at.to_query_string())).unwrap(), at);
        for bad in [
            "since=yesterday",
            "since=10y",
            "since=99999999999999999999d",
            "since=m",
        ] {
            let err = ExecsQuery::parse(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("since"), "{bad}: {err}");
        }
        let now = Timestamp::now();
        assert_eq!(
            Since::Ago(Duration::from_secs(u64::MAX / 2)).resolve(now),
            Timestamp(std::time::UNIX_EPOCH)
        );
    }

    #[test]
    fn times_with_offsets_are_converted_to_utc() {
        let utc = Timestamp::parse("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-22T10:00:00Z").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22T12:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22T12:00:00 02:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22T05:30:00-04:30").unwrap(), utc);
        assert_eq!(
            parse_time("2026-11-22T12:00:00.500+02:00")
                .unwrap()
                .to_string(),
            "2026-11-22T10:00:00.500Z"
        );
        assert!(parse_time("2026-11-22T12:00:00+25:00").is_err());
        assert!(parse_time("last tuesday").is_err());
        // A '+' that was not percent-encoded arrives as a space and still works.
        let q = FindingsQuery::parse(Some("since=2026-11-22T12:00:00+02:00")).unwrap();
        assert_eq!(q.since, Some(utc));
    }
}
