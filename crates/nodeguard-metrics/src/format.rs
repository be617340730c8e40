//! Exposition formats: OpenMetrics (what prometheus-client writes) and the Prometheus text
//! format 0.0.4 (what `promtool check metrics`, older scrapers and `curl` users read).

use prometheus_client::registry::Registry;
use std::fmt;

/// Content type of the OpenMetrics text exposition ([`encode`]).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the Prometheus text format 0.0.4 ([`encode_text`]).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Room for a typical node's exposition, so most scrapes never grow the buffer.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// The error of encoding a registry. Writing into a `String` cannot fail, so this only
/// happens when a registered metric or collector refuses to encode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode the metrics registry as {format}")]
    Encode {
        format: Format,
        #[source]
        source: fmt::Error,
    },
}

/// A metrics exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, `# EOF`-terminated. Prometheus asks for it first.
    OpenMetrics,
    /// Prometheus text format 0.0.4, for clients that do not ask for OpenMetrics.
    Text,
}

impl Format {
    /// Picks the format for an HTTP `Accept` header, as client_golang does: OpenMetrics when
    /// the client accepts `application/openmetrics-text` (with a non-zero `q`), the
    /// Prometheus text format otherwise (no header, `*/*`, `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case("application/openmetrics-text") {
                return false;
            }
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map(|(_, v)| v.trim().parse::<f32>().unwrap_or(0.0))
                .unwrap_or(1.0);
            q > 0.0
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` to serve this format with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OpenMetrics => "OpenMetrics text 1.0.0",
            Format::Text => "Prometheus text 0.0.4",
        })
    }
}

/// Encodes every series of `registry` as OpenMetrics text (serve it with [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> Result<String, Error> {
    let mut out = String::with_capacity(INITIAL_CAPACITY);
    prometheus_client::encoding::text::encode(&mut out, registry).map_err(|source| {
        Error::Encode {
            format: Format::OpenMetrics,
            source,
        }
    })?;
    Ok(out)
}

/// Encodes every series of `registry` as Prometheus text format 0.0.4 (serve it with
/// [`TEXT_CONTENT_TYPE`]). Same samples as [`encode`]; only the metadata differs.
pub fn encode_text(registry: &Registry) -> Result<String, Error> {
    let mut openmetrics = String::with_capacity(INITIAL_CAPACITY);
    prometheus_client::encoding::text::encode_registry(&mut openmetrics, registry).map_err(
        |source| Error::Encode {
            format: Format::Text,
            source,
        },
    )?;
    Ok(openmetrics_to_text(&openmetrics))
}

/// Encodes `registry` in `format`; pair it with [`Format::content_type`].
pub fn encode_as(registry: &Registry, format: Format) -> Result<String, Error> {
    match format {
        Format::OpenMetrics => encode(registry),
        Format::Text => encode_text(registry),
    }
}

/// Rewrites the OpenMetrics metadata prometheus-client writes into the 0.0.4 form. Sample
/// lines are the same in both formats (this crate writes no exemplars and no timestamps);
/// what differs:
/// - a counter family is named without `_total` in OpenMetrics, with it in 0.0.4;
/// - `info` is not a 0.0.4 type: it becomes a gauge named `<name>_info`;
/// - `# UNIT` and `# EOF` do not exist in 0.0.4.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes `# HELP` just before `# TYPE`; the family's 0.0.4 name is
    // known only once its type is, so the help line waits for it.
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            if let Some(previous) = pending_help.replace(help) {
                push_line(&mut out, &["# HELP ", previous]);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some(help) = pending_help.take() {
                let text = help
                    .strip_prefix(name)
                    .and_then(|t| t.strip_prefix(' '))
                    .unwrap_or("");
                push_line(&mut out, &["# HELP ", name, suffix, " ", text]);
            }
            push_line(&mut out, &["# TYPE ", name, suffix, " ", kind]);
            continue;
        }
        if let Some(help) = pending_help.take() {
            push_line(&mut out, &["# HELP ", help]);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        push_line(&mut out, &[line]);
    }
    if let Some(help) = pending_help {
        push_line(&mut out, &["# HELP ", help]);
    }
    out
}

fn push_line(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_curl_gets_text() {
        // Prometheus 2.42's scrape Accept header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; q=0")),
            Format::Text,
            "q=0 means not acceptable"
        );
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;q=0.5, application/openmetrics-text; q=0.2"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::OpenMetrics.content_type(), CONTENT_TYPE);
        assert_eq!(Format::Text.content_type(), TEXT_CONTENT_TYPE);
    }

    #[test]
    fn converts_openmetrics_metadata_to_text_format() {
        let openmetrics = "\
# HELP ng_detected Findings detected.
# TYPE ng_detected counter
ng_detected_total{kind=\"a\"} 3
# HELP ng_build Build.
# TYPE ng_build info
ng_build_info{version=\"1\"} 1
# HELP ng_duration_seconds Time.
# TYPE ng_duration_seconds histogram
# UNIT ng_duration_seconds seconds
ng_duration_seconds_sum 0.5
ng_duration_seconds_count 1
ng_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP ng_open Open.
# TYPE ng_open gauge
ng_open 2
# EOF
";
        let expected = "\
# HELP ng_detected_total Findings detected.
# TYPE ng_detected_total counter
ng_detected_total{kind=\"a\"} 3
# HELP ng_build_info Build.
# TYPE ng_build_info gauge
ng_build_info{version=\"1\"} 1
# HELP ng_duration_seconds Time.
# TYPE ng_duration_seconds histogram
ng_duration_seconds_sum 0.5
ng_duration_seconds_count 1
ng_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP ng_open Open.
# TYPE ng_open gauge
ng_open 2
";
        assert_eq!(openmetrics_to_text(openmetrics), expected);
    }
}

/// Renders a registry at most once per `max_age` and format, so a burst of scrapers (many
/// Prometheus replicas, a responder's loop of curl) share one rendering instead of each
/// taking a core. Concurrent callers wait for the one rendering in progress.
#[derive(Debug)]
pub struct CachedEncoder {
    registry: std::sync::Arc<Registry>,
    max_age: std::time::Duration,
    cache: std::sync::Mutex<[Option<(std::time::Instant, String)>; 2]>,
}

impl CachedEncoder {
    pub fn new(registry: std::sync::Arc<Registry>, max_age: std::time::Duration) -> CachedEncoder {
        CachedEncoder {
            registry,
            max_age,
            cache: std::sync::Mutex::new([None, None]),
        }
    }

    /// The exposition in `format`, rendered now or at most `max_age` ago.
    pub fn render(&self, format: Format) -> Result<String, Error> {
        let slot = match format {
            Format::OpenMetrics => 0,
            Format::Text => 1,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, text)) = &cache[slot] {
            if at.elapsed() < self.max_age {
                return Ok(text.clone());
            }
        }
        let text = encode_as(&self.registry, format)?;
        cache[slot] = Some((std::time::Instant::now(), text.clone()));
        Ok(text)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn renders_once_per_max_age_and_per_format() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("probe", "a probe", counter.clone());
        let encoder = CachedEncoder::new(Arc::new(registry), Duration::from_secs(3600));
        let first = encoder.render(Format::OpenMetrics).unwrap();
        counter.inc();
        assert_eq!(
            encoder.render(Format::OpenMetrics).unwrap(),
            first,
            "served from cache"
        );
        let text = encoder.render(Format::Text).unwrap();
        assert!(text.contains("probe_total 1"), "{text}");

        let fresh = CachedEncoder::new(encoder.registry.clone(), Duration::ZERO);
        assert!(fresh
            .render(Format::OpenMetrics)
            .unwrap()
            .contains("probe_total 1"));
    }
}
