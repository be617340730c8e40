//! The Grafana dashboard (`manifests/grafana/grafana-dashboard.json`) against a real agent.
//!
//! A dashboard whose query names a metric the agent does not export shows "No data" and
//! nobody notices. So every PromQL expression of the dashboard (panel targets and template
//! variable queries) is taken apart by a small tokenizer ([`promql`]) and each metric name it
//! references must be a sample name in a real scrape of `nodeguard run`, and each label it
//! selects on or groups by must be a label of that metric in the scrape, or a target label
//! Prometheus adds (`job`, `instance`, and what `manifests/servicemonitor.yaml` relabels into,
//! i.e. `node`).
//!
//! The agent is the real binary with a container of its own (CAP_SYS_ADMIN, so findings with a
//! namespace exist) and the fake Kubernetes API of `nodeguard_testkit` (so that Events are sent
//! and `nodeguard_events_*` exist, as they do in a cluster). Then, when `prometheus` is
//! installed, a real Prometheus scrapes that agent with the labels the ServiceMonitor gives,
//! and every expression, with the dashboard's variables resolved as Grafana resolves them, must
//! run without error and return data: what a user opening the dashboard would see.
//!
//! Needs root, runc, busybox-static and capsh (and `prometheus`); without them the test says
//! why it skipped, and with `CI` set it fails instead. The tokenizer's and the manifest's tests
//! need nothing. Run: `cargo test -p nodeguard --test dashboard`.

mod support;

use nodeguard_testkit::fake::{FakeApi, SHIPPED_TOKEN};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::agent::{Agent, Launch, StateDir};
use support::container::ContainerSpec;
use support::image::Image;
use support::prometheus::{require_prometheus, Prometheus};
use support::wait_for;

const NODE: &str = "dashboard-node";
/// The namespace of the test's pod.
const NAMESPACE: &str = "dashboard-test";
/// Longest wait for the agent's first scan (a debug build hashing the node's executables on a
/// machine other tests load too).
const FIRST_SCAN_TIMEOUT: Duration = Duration::from_secs(240);
/// Longest wait for anything that needs a few more scans or scrapes.
const SCANS_TIMEOUT: Duration = Duration::from_secs(90);
/// What Grafana puts for `$__rate_interval` with a 1 s scrape interval is 4 s at least; a
/// minute keeps `rate()` and `histogram_quantile()` well fed.
const RATE_INTERVAL: &str = "1m";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn dashboard_path() -> PathBuf {
    manifests_dir().join("grafana/grafana-dashboard.json")
}

fn load_dashboard() -> Value {
    let path = dashboard_path();
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn excerpt(text: &str) -> String {
    support::excerpt(text, 3000)
}

// ---------------------------------------------------------------------------------------------
// PromQL, as far as the check needs it.

mod promql {
    use std::collections::BTreeSet;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Token {
        /// A metric name, label name, function, keyword or aggregation operator.
        Ident(String),
        /// A quoted string (its content, unescaped only as far as needed to find its end).
        Str(String),
        Number(String),
        /// A Grafana template variable: `$name`, `${name}`, `${name:format}`, `[[name]]`.
        Var(String),
        /// The inside of `[...]`: a range or subquery duration.
        Range(String),
        Op(String),
    }

    /// Splits a PromQL expression (with Grafana variables) into tokens.
    pub fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = expr.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '#' {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            } else if c == '"' || c == '\'' || c == '`' {
                let start = i + 1;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string in {expr:?}")),
                        Some('\\') if c != '`' => i += 2,
                        Some(&q) if q == c => break,
                        Some(_) => i += 1,
                    }
                }
                tokens.push(Token::Str(chars[start..i].iter().collect()));
                i += 1;
            } else if c == '$' {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    let start = i + 1;
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    if i == chars.len() {
                        return Err(format!("unterminated ${{ in {expr:?}"));
                    }
                    let inner: String = chars[start..i].iter().collect();
                    let name = inner.split(':').next().unwrap_or_default().to_string();
                    tokens.push(Token::Var(name));
                    i += 1;
                } else {
                    let start = i;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    if start == i {
                        return Err(format!("a lone $ in {expr:?}"));
                    }
                    tokens.push(Token::Var(chars[start..i].iter().collect()));
                }
            } else if c == '[' {
                if chars.get(i + 1) == Some(&'[') {
                    let start = i + 2;
                    let end = (start..chars.len().saturating_sub(1))
                        .find(|&j| chars[j] == ']' && chars[j + 1] == ']')
                        .ok_or_else(|| format!("unterminated [[ in {expr:?}"))?;
                    tokens.push(Token::Var(chars[start..end].iter().collect()));
                    i = end + 2;
                } else {
                    let start = i + 1;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    if i == chars.len() {
                        return Err(format!("unterminated [ in {expr:?}"));
                    }
                    tokens.push(Token::Range(chars[start..i].iter().collect()));
                    i += 1;
                }
            } else if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            } else {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["==", "!=", "=~", "!~", ">=", "<="].contains(&two.as_str()) {
                    tokens.push(Token::Op(two));
                    i += 2;
                } else if "+-*/%^<>=(){},@".contains(c) {
                    tokens.push(Token::Op(c.to_string()));
                    i += 1;
                } else {
                    return Err(format!("unexpected {c:?} in {expr:?}"));
                }
            }
        }
        Ok(tokens)
    }

    /// PromQL's functions (Prometheus 2.x and 3.x).
    const FUNCTIONS: &[&str] = &[
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "double_exponential_smoothing",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    ];
    /// Aggregation operators: followed by `(` or by a grouping clause.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    /// Clauses followed by a parenthesised list of label names.
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    /// Binary operators and modifiers written as words, and literals.
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "atan2", "offset", "inf", "nan",
    ];

    /// One metric selector: the metric name and the labels its `{...}` matches on.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Selector {
        pub metric: String,
        pub labels: BTreeSet<String>,
    }

    /// What an expression refers to.
    #[derive(Debug, Default, PartialEq)]
    pub struct Uses {
        pub selectors: Vec<Selector>,
        /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
        pub grouping: BTreeSet<String>,
    }

    /// The metric selectors and grouping labels of `expr`; an error for what cannot be checked
    /// (an unknown function, a selector without a metric name, unbalanced brackets).
    pub fn analyse(expr: &str) -> Result<Uses, String> {
        let tokens = tokenize(expr)?;
        let mut uses = Uses::default();
        let mut depth: i64 = 0;
        let is_op = |t: Option<&Token>, op: &str| matches!(t, Some(Token::Op(o)) if o == op);
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Ident(word) => {
                    let lower = word.to_ascii_lowercase();
                    let next = tokens.get(i + 1);
                    if GROUPING.contains(&lower.as_str()) {
                        if !is_op(next, "(") {
                            if lower.starts_with("group_") {
                                i += 1;
                                continue;
                            }
                            return Err(format!("{word} without a label list in {expr:?}"));
                        }
                        i += 2;
                        loop {
                            match tokens.get(i) {
                                Some(Token::Ident(label)) => {
                                    uses.grouping.insert(label.clone());
                                }
                                Some(Token::Op(o)) if o == "," => {}
                                Some(Token::Op(o)) if o == ")" => break,
                                other => {
                                    return Err(format!(
                                    "unexpected {other:?} in the label list of {word} in {expr:?}"
                                ))
                                }
                            }
                            i += 1;
                        }
                    } else if AGGREGATIONS.contains(&lower.as_str()) {
                        let follows = matches!(next, Some(Token::Ident(w))
                            if ["by", "without"].contains(&w.to_ascii_lowercase().as_str()));
                        if !is_op(next, "(") && !follows {
                            return Err(format!(
                                "{word} is an aggregation, not a metric, in {expr:?}"
                            ));
                        }
                    } else if KEYWORDS.contains(&lower.as_str()) {
                        if lower == "offset" {
                            i += 1; // its duration
                        }
                    } else if is_op(next, "(") {
                        if !FUNCTIONS.contains(&word.as_str()) {
                            return Err(format!("unknown function {word}() in {expr:?}"));
                        }
                    } else {
                        let mut selector = Selector {
                            metric: word.clone(),
                            labels: BTreeSet::new(),
                        };
                        if is_op(next, "{") {
                            i = matchers(&tokens, i + 2, &mut selector.labels, expr)?;
                        }
                        uses.selectors.push(selector);
                    }
                }
                Token::Op(o) if o == "{" => {
                    return Err(format!(
                        "a selector without a metric name cannot be checked: {expr:?}"
                    ))
                }
                Token::Op(o) if o == "(" => depth += 1,
                Token::Op(o) if o == ")" => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("unbalanced ) in {expr:?}"));
                    }
                }
                Token::Var(name) if !name.starts_with("__") => {
                    return Err(format!(
                        "variable ${name} outside a string or range: it could stand for a \
                         metric or label, which cannot be checked, in {expr:?}"
                    ))
                }
                _ => {}
            }
            i += 1;
        }
        if depth != 0 {
            return Err(format!("unbalanced ( in {expr:?}"));
        }
        if uses.selectors.is_empty() {
            return Err(format!("no metric in {expr:?}"));
        }
        Ok(uses)
    }

    /// Reads `label op "value", ...}` from `i`; returns the index of the closing `}`.
    fn matchers(
        tokens: &[Token],
        mut i: usize,
        labels: &mut BTreeSet<String>,
        expr: &str,
    ) -> Result<usize, String> {
        loop {
            match tokens.get(i) {
                Some(Token::Op(o)) if o == "}" => return Ok(i),
                Some(Token::Op(o)) if o == "," => i += 1,
                Some(Token::Ident(label)) => {
                    if label == "__name__" {
                        return Err(format!("__name__ matchers cannot be checked: {expr:?}"));
                    }
                    let op_ok = matches!(tokens.get(i + 1), Some(Token::Op(o))
                        if ["=", "!=", "=~", "!~"].contains(&o.as_str()));
                    let value_ok = matches!(tokens.get(i + 2), Some(Token::Str(_)));
                    if !op_ok || !value_ok {
                        return Err(format!("bad matcher for {label} in {expr:?}"));
                    }
                    labels.insert(label.clone());
                    i += 3;
                }
                other => return Err(format!("unexpected {other:?} in a selector of {expr:?}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scrape, and the check.

/// Sample names of a `/metrics` text (0.0.4 format) with the label names seen on each.
#[derive(Debug, Default)]
struct Exported(BTreeMap<String, BTreeSet<String>>);

impl Exported {
    fn parse(text: &str) -> Result<Exported, String> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| format!("no value on {line:?}"))?;
            let labels = out.entry(line[..name_end].to_string()).or_default();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                loop {
                    rest = rest.trim_start_matches(',').trim_start();
                    if let Some(after) = rest.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                    let (name, value) = rest
                        .split_once("=\"")
                        .ok_or_else(|| format!("bad label in {line:?}"))?;
                    labels.insert(name.trim().to_string());
                    // The value ends at the first unescaped quote.
                    let mut chars = value.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => {
                                chars.next();
                            }
                            Some((at, '"')) => break at,
                            Some(_) => {}
                            None => return Err(format!("unterminated label value in {line:?}")),
                        }
                    };
                    rest = &value[end + 1..];
                }
            }
            if rest.split_whitespace().next().is_none() {
                return Err(format!("no value on {line:?}"));
            }
        }
        Ok(Exported(out))
    }
}

/// Labels Prometheus attaches to every series of a target scraped through the shipped
/// ServiceMonitor: `job`, `instance`, and each `targetLabel` of its relabelings (`node`).
fn target_labels() -> BTreeSet<String> {
    let path = manifests_dir().join("servicemonitor.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let monitor: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    let mut labels: BTreeSet<String> = ["job", "instance"].map(String::from).into();
    for endpoint in monitor["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for relabel in endpoint["relabelings"].as_array().into_iter().flatten() {
            if let Some(label) = relabel["targetLabel"].as_str() {
                labels.insert(label.to_string());
            }
        }
    }
    labels
}

/// One PromQL expression of the dashboard, and where it is.
#[derive(Debug, Clone)]
struct Query {
    place: String,
    expr: String,
    /// For `label_values(SELECTOR, LABEL)`: the label whose values the variable offers.
    offers_label: Option<String>,
}

/// Every expression of the dashboard: panel targets (rows' nested panels included) and the
/// template variables' `label_values(...)` queries.
fn queries(dashboard: &Value) -> Result<Vec<Query>, String> {
    fn walk(panels: &Value, out: &mut Vec<Query>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        place: format!("panel {title:?} target {}", target["refId"]),
                        expr: expr.to_string(),
                        offers_label: None,
                    });
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .ok_or_else(|| format!("variable {name} has no query"))?;
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| {
                format!(
                    "variable {name}: only label_values(SELECTOR, LABEL) is checked, not {query:?}"
                )
            })?;
        let (selector, label) = inner.rsplit_once(',').ok_or_else(|| {
            format!("variable {name}: label_values without a selector: {query:?}")
        })?;
        out.push(Query {
            place: format!("variable ${name}"),
            expr: selector.trim().to_string(),
            offers_label: Some(label.trim().to_string()),
        });
    }
    Ok(out)
}

/// What is wrong with `query` against a scrape: metric names the agent did not export, labels
/// those metrics do not have. Empty when it is right.
fn problems(query: &Query, exported: &Exported, target: &BTreeSet<String>) -> Vec<String> {
    let uses = match promql::analyse(&query.expr) {
        Ok(uses) => uses,
        Err(e) => return vec![format!("{}: {e}", query.place)],
    };
    let mut out = Vec::new();
    let mut known = Vec::new();
    for selector in &uses.selectors {
        match exported.0.get(&selector.metric) {
            None => out.push(format!(
                "{}: {} is not exported by the agent (expr {:?})",
                query.place, selector.metric, query.expr
            )),
            Some(labels) => {
                for label in selector.labels.difference(labels) {
                    if !target.contains(label) {
                        out.push(format!(
                            "{}: {} has no label {label} (it has {labels:?}; target labels {target:?})",
                            query.place, selector.metric
                        ));
                    }
                }
                known.push((&selector.metric, labels));
            }
        }
    }
    // A grouping label must be on every metric the expression reads.
    let wanted = uses.grouping.iter().chain(query.offers_label.iter());
    for label in wanted {
        if target.contains(label) {
            continue;
        }
        for (metric, labels) in &known {
            if !labels.contains(label) {
                out.push(format!(
                    "{}: groups or picks by {label}, which {metric} does not have (it has {labels:?})",
                    query.place
                ));
            }
        }
    }
    out
}

/// Every problem of every query of `dashboard`.
fn check_dashboard(dashboard: &Value, exported: &Exported) -> Vec<String> {
    let target = target_labels();
    match queries(dashboard) {
        Ok(queries) => queries
            .iter()
            .flat_map(|q| problems(q, exported, &target))
            .collect(),
        Err(e) => vec![e],
    }
}

// ---------------------------------------------------------------------------------------------
// Tests that need nothing but the files.

#[test]
fn the_tokenizer_finds_metrics_labels_and_skips_functions_keywords_and_variables() {
    let uses = promql::analyse(
        r#"histogram_quantile(0.95, sum by (le, scan_type) (rate(nodeguard_scan_duration_seconds_bucket{job=~"$job", node=~"${node:regex}"}[$__rate_interval])))"#,
    )
    .unwrap();
    assert_eq!(uses.selectors.len(), 1, "{uses:?}");
    assert_eq!(
        uses.selectors[0].metric,
        "nodeguard_scan_duration_seconds_bucket"
    );
    assert_eq!(
        uses.selectors[0].labels,
        ["job", "node"].map(String::from).into()
    );
    assert_eq!(uses.grouping, ["le", "scan_type"].map(String::from).into());

    let uses = promql::analyse(
        "max by (node, scan_type) (time() - nodeguard_last_scan_timestamp_seconds offset 5m) \
         / on (node) group_left (version) nodeguard_build_info",
    )
    .unwrap();
    let metrics: Vec<&str> = uses.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "nodeguard_last_scan_timestamp_seconds",
            "nodeguard_build_info"
        ]
    );
    assert_eq!(
        uses.grouping,
        ["node", "scan_type", "version"].map(String::from).into()
    );

    // Words inside strings are not metrics; `sum(...) by (x)` is grouping too.
    let uses = promql::analyse(
        r#"sum(label_replace(nodeguard_findings{kind="rate"}, "ns", "$1", "namespace", "(.*)")) by (ns)"#,
    )
    .unwrap();
    assert_eq!(uses.selectors.len(), 1);
    assert_eq!(uses.grouping, ["ns"].map(String::from).into());

    // What cannot be checked is rejected, not waved through.
    for bad in [
        "rat(nodeguard_scans_total[5m])",
        r#"{__name__="nodeguard_findings"}"#,
        r#"nodeguard_findings{__name__=~"x"}"#,
        "sum by (kind (nodeguard_findings)",
        "sum(nodeguard_findings",
        "$metric",
        "time()",
        r#"nodeguard_findings{kind="x}"#,
        "sum by nodeguard_findings",
    ] {
        assert!(
            promql::analyse(bad).is_err(),
            "{bad:?} should be rejected: {:?}",
            promql::analyse(bad)
        );
    }
}

/// A scrape as the agent writes it (shape only; the end-to-end test uses a real one).
const SAMPLE_SCRAPE: &str = "\
# TYPE nodeguard_findings gauge
nodeguard_findings{kind=\"runs_as_root\",severity=\"medium\",namespace=\"a\",pod=\"p\",container=\"c\"} 1
# TYPE nodeguard_scan_duration_seconds histogram
nodeguard_scan_duration_seconds_sum{scan_type=\"processes\"} 0.5
nodeguard_scan_duration_seconds_count{scan_type=\"processes\"} 2
nodeguard_scan_duration_seconds_bucket{le=\"0.001\",scan_type=\"processes\"} 0
nodeguard_events_total{result=\"sent\"} 3
";

#[test]
fn the_check_rejects_misspelt_metrics_missing_suffixes_and_absent_labels() {
    let exported = Exported::parse(SAMPLE_SCRAPE).unwrap();
    let target = target_labels();
    assert!(
        target.contains("node"),
        "the ServiceMonitor relabels into node: {target:?}"
    );
    let check = |expr: &str| {
        problems(
            &Query {
                place: "test".into(),
                expr: expr.into(),
                offers_label: None,
            },
            &exported,
            &target,
        )
    };
    for good in [
        r#"sum by (severity) (nodeguard_findings{node=~"$node", namespace=~"$namespace"})"#,
        "histogram_quantile(0.9, sum by (le) (rate(nodeguard_scan_duration_seconds_bucket[5m])))",
        "rate(nodeguard_scan_duration_seconds_sum[5m]) / rate(nodeguard_scan_duration_seconds_count[5m])",
        "sum by (result, job) (increase(nodeguard_events_total[5m]))",
    ] {
        assert_eq!(check(good), Vec::<String>::new(), "{good}");
    }
    for bad in [
        "sum(nodeguard_finding)",                                      // misspelt
        "nodeguard_findings_total",                                    // a gauge has no _total
        "nodeguard_findings_bucket",                                   // nor buckets
        "nodeguard_scan_duration_seconds", // a histogram is only its samples
        "increase(nodeguard_events[5m])",  // prometheus-client appends _total
        r#"nodeguard_findings{severty="high"}"#, // a label it does not have
        "sum by (scan_type) (nodeguard_findings)", // grouping by a label it does not have
        "sum by (le) (rate(nodeguard_scan_duration_seconds_sum[5m]))", // le only on _bucket
    ] {
        assert!(!check(bad).is_empty(), "{bad} should be rejected");
    }
}

#[test]
fn the_dashboard_is_grafana_json_with_a_datasource_variable_and_the_promised_panels() {
    let dashboard = load_dashboard();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dashboard["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    let vars: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or("?"), v))
        .collect();
    assert_eq!(vars["datasource"]["type"], "datasource");
    assert_eq!(vars["datasource"]["query"], "prometheus");
    for name in ["node", "namespace"] {
        let var = vars
            .get(name)
            .unwrap_or_else(|| panic!("no ${name} variable"));
        assert_eq!(var["type"], "query", "${name}");
    }
    // Every panel and target reads from the chosen data source, never a fixed uid.
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    // What the issue asks the dashboard to show, by the series that show it.
    for wanted in [
        "sum by (severity) (nodeguard_findings",
        "sum by (kind) (nodeguard_findings",
        "sum by (namespace) (nodeguard_findings",
        "increase(nodeguard_findings_detected_total",
        "nodeguard_scan_duration_seconds_bucket",
        "time() - nodeguard_last_scan_timestamp_seconds",
        "sum by (result) (increase(nodeguard_events_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(wanted)),
            "no panel query contains {wanted:?}"
        );
    }
}

/// The ConfigMap the Grafana sidecar loads is generated from the one JSON file.
#[test]
fn the_configmap_generator_carries_the_dashboard_with_the_sidecar_label() {
    let dir = manifests_dir().join("grafana");
    let text =
        fs::read_to_string(dir.join("kustomization.yaml")).expect("grafana/kustomization.yaml");
    let k: Value = serde_yaml::from_str(&text).expect("kustomization YAML");
    assert_eq!(k["generatorOptions"]["labels"]["grafana_dashboard"], "1");
    let generators = k["configMapGenerator"]
        .as_array()
        .expect("configMapGenerator");
    assert_eq!(generators.len(), 1);
    let files: Vec<&str> = generators[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let source = files[0].split_once('=').map_or(files[0], |(_, file)| file);
    assert_eq!(dir.join(source), dashboard_path());
    // The default `kubectl apply -k manifests/` does not pull the dashboard in.
    let main = fs::read_to_string(manifests_dir().join("kustomization.yaml")).unwrap();
    assert!(
        !main.contains("grafana"),
        "manifests/kustomization.yaml: {main}"
    );

    // Rendered by kustomize itself when kubectl is here (CI does not install it).
    let Some(kubectl) = support::which("kubectl") else {
        let _ = writeln!(
            std::io::stderr(),
            "note: kubectl not found; the ConfigMap was checked from the kustomization only"
        );
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_yaml::from_slice(&out.stdout).expect("kustomize output is one ConfigMap");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "nodeguard");
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 1);
    let (key, body) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"), "{key}");
    assert_eq!(
        body.as_str(),
        Some(fs::read_to_string(dashboard_path()).unwrap().as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// The real agent.

/// `nodeguard run --kube on` against the fake API server, with a state directory of its
/// own (support::agent runs it: killed on drop, its log printed when the test failed).
fn start_agent(kubeconfig: &Path) -> Agent {
    Agent::launch(
        &[
            "--node-name",
            NODE,
            "--interval",
            "2s",
            "--fs-interval",
            "30s",
        ],
        Launch {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            state_dir: StateDir::Own,
            ..Launch::default()
        },
    )
}

/// `/metrics` in the 0.0.4 text format.
fn scrape(agent: &Agent) -> Result<String, String> {
    let r = agent.get("/metrics")?;
    if r.status != 200 {
        return Err(format!(
            "/metrics answered {}: {}",
            r.status,
            excerpt(&r.body)
        ));
    }
    Ok(r.body)
}

/// The pod the kubelet would report for the test's container.
fn pod_json(container_id: &str, pod_uid: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": NAMESPACE,
            "uid": pod_uid,
            "creationTimestamp": "2026-11-22T10:00:00Z",
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "web", "image": "nginx:1.27"}],
        },
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "containerStatuses": [{
                "name": "web",
                "containerID": format!("containerd://{container_id}"),
                "image": "nginx:1.27",
                "imageID": format!("docker.io/library/nginx@sha256:{}", support::random_hex(32)),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-11-22T10:00:01Z"}},
            }],
        },
    })
}

/// A copy of `dashboard` in which the first panel query that contains `from` has it replaced
/// by `to`.
fn with_first_expr_edited(dashboard: &Value, from: &str, to: &str) -> Value {
    let mut copy = dashboard.clone();
    let target = copy["panels"]
        .as_array_mut()
        .expect("panels")
        .iter_mut()
        .flat_map(|p| p["targets"].as_array_mut().into_iter().flatten())
        .find(|t| t["expr"].as_str().is_some_and(|e| e.contains(from)))
        .unwrap_or_else(|| panic!("no panel query contains {from:?}"));
    let edited = target["expr"]
        .as_str()
        .unwrap_or_default()
        .replacen(from, to, 1);
    target["expr"] = Value::String(edited);
    copy
}

/// The value of the first sample of `text` whose line starts with `prefix`.
fn first_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn every_dashboard_query_names_metrics_and_labels_of_a_real_scrape_and_returns_data() {
    require_containers!();
    let fake = FakeApi::shipped(NODE);
    assert_eq!(fake.token, SHIPPED_TOKEN);
    let dir = tempfile::Builder::new()
        .prefix("nodeguard-dashboard-")
        .tempdir()
        .expect("create the test's tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    fs::write(&kubeconfig, fake.kubeconfig()).unwrap();

    // A container with CAP_SYS_ADMIN in a pod the fake serves: findings with a namespace, and
    // Events about them.
    let spec = ContainerSpec::new(Image::busybox()).add_capability("CAP_SYS_ADMIN");
    fake.put_pod(pod_json(&spec.id, &spec.pod_uid));
    let _container = spec.start();
    let agent = start_agent(&kubeconfig);

    let namespace_series = "nodeguard_findings{kind=\"dangerous_capability\"";
    let scrape = wait_for(
        "a scrape with the pod's findings in its namespace and Events sent",
        FIRST_SCAN_TIMEOUT,
        || {
            let text = scrape(&agent)?;
            let enriched = text.lines().any(|l| {
                l.starts_with(namespace_series) && l.contains(&format!("namespace=\"{NAMESPACE}\""))
            });
            let sent = first_value(&text, "nodeguard_events_total{result=\"sent\"}").unwrap_or(0.0);
            if enriched && sent > 0.0 {
                Ok(text)
            } else {
                Err(format!(
                    "enriched dangerous_capability: {enriched}, events sent: {sent}\n{}",
                    excerpt(&text)
                ))
            }
        },
    );
    let exported = Exported::parse(&scrape).unwrap_or_else(|e| panic!("{e}\n{}", excerpt(&scrape)));

    let dashboard = load_dashboard();
    let all = queries(&dashboard).expect("the dashboard's queries");
    assert!(all.len() >= 14, "only {} queries: {all:?}", all.len());
    let found = check_dashboard(&dashboard, &exported);
    assert!(
        found.is_empty(),
        "the dashboard queries what the agent does not export:\n  {}\n--- scrape:\n{}",
        found.join("\n  "),
        excerpt(&scrape)
    );

    // The failure is visible: one misspelt metric and one absent label in a copy.
    for (from, to, expect) in [
        (
            "nodeguard_last_scan_timestamp_seconds",
            "nodeguard_last_scan_timestamp",
            "nodeguard_last_scan_timestamp is not exported by the agent",
        ),
        (
            "sum by (severity)",
            "sum by (severities)",
            "groups or picks by severities, which nodeguard_findings does not have",
        ),
        (
            "process_resident_memory_bytes",
            "process_resident_memory_bytes_total",
            "process_resident_memory_bytes_total is not exported by the agent",
        ),
    ] {
        let mutated = with_first_expr_edited(&dashboard, from, to);
        let found = check_dashboard(&mutated, &exported);
        assert!(
            found.len() == 1 && found[0].contains(expect),
            "{from:?} -> {to:?} should be reported once as {expect:?}: {found:?}"
        );
    }

    // A real Prometheus, scraping the agent as the ServiceMonitor would.
    let Some(prometheus_bin) = require_prometheus() else {
        return;
    };
    let prometheus = Prometheus::start(&prometheus_bin, agent.port, &[("node", NODE)]);
    let vars = resolve_variables(&dashboard, &prometheus);
    for query in all.iter().filter(|q| q.offers_label.is_none()) {
        let promql = substitute(&query.expr, &vars);
        wait_for(
            &format!("{} to return data: {promql}", query.place),
            SCANS_TIMEOUT,
            || {
                let result = prometheus.query(&promql);
                match result {
                    Ok(series) if !series.is_empty() => Ok(()),
                    Ok(_) => Err("an empty result".to_string()),
                    Err(e) => Err(e),
                }
            },
        );
    }
    // The namespace panel shows the test pod's findings: as many as the agent reports.
    let findings = agent.get_json(&format!("/v1/findings?namespace={NAMESPACE}"));
    let open = findings["findings"].as_array().map_or(0, Vec::len);
    assert!(open > 0, "{findings}");
    let by_namespace = all
        .iter()
        .find(|q| q.place.contains("by namespace"))
        .expect("the namespace panel");
    let promql = substitute(&by_namespace.expr, &vars);
    wait_for(
        &format!("{promql} to show {open} findings in {NAMESPACE}"),
        SCANS_TIMEOUT,
        || {
            let series = prometheus.query(&promql)?;
            let row = series
                .iter()
                .find(|s| s["metric"]["namespace"] == NAMESPACE)
                .ok_or_else(|| format!("no {NAMESPACE} row: {series:?}"))?;
            let value = row["value"][1].as_str().unwrap_or_default();
            if value == open.to_string() {
                Ok(())
            } else {
                Err(format!("{value} instead of {open}"))
            }
        },
    );
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// Grafana variables, as Grafana fills them in before Prometheus sees a query.

/// Replaces Grafana variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) in `expr`.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_string();
    // Longest names first, so that `$node` never eats the start of `$node_name`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let value = &vars[name];
        out = out.replace(&format!("[[{name}]]"), value);
        out = out.replace(&format!("${{{name}}}"), value);
        while let Some(at) = out.find(&format!("${{{name}:")) {
            let end = out[at..].find('}').map_or(out.len(), |e| at + e + 1);
            out.replace_range(at..end, value);
        }
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// The values Grafana gives the dashboard's variables when it opens: `All` (the allValue) for
/// multi-value variables, else the first value Prometheus offers. Each variable must offer
/// something: an empty picker is what a user would notice.
fn resolve_variables(dashboard: &Value, prometheus: &Prometheus) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::from([("__rate_interval".to_string(), RATE_INTERVAL.to_string())]);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?").to_string();
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or("");
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("${name}: {query:?} is not label_values(SELECTOR, LABEL)"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        let selector = substitute(selector.trim(), &vars);
        let label = label.trim();
        let offered = wait_for(
            &format!("${name}: {label} values of {selector} in Prometheus"),
            SCANS_TIMEOUT,
            || match prometheus.label_values(label, &selector)? {
                values if values.is_empty() => Err("none".to_string()),
                values => Ok(values),
            },
        );
        let value = match var["allValue"].as_str() {
            Some(all) if var["includeAll"] == true => all.to_string(),
            _ => offered[0].clone(),
        };
        vars.insert(name, value);
    }
    vars
}
