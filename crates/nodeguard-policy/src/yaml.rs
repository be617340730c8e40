//! The YAML front end: the only module that names `serde_yaml`.
//!
//! Everything else in the crate is plain serde. Validation of values (digests, globs,
//! capability names, ...) happens *inside* the serde visitors of the spec types, so the YAML
//! deserializer pins each error to the offending node and its path. A replacement front end
//! must do the same: attach the position and path of the node being deserialized to an error
//! raised by a visitor, which serde_yaml 0.9 does through its `location()` and its
//! `path: message` rendering.

use crate::error::PolicyError;
use serde::de::{DeserializeOwned, DeserializeSeed};

/// What a policy shows where the problem is at the top of the document.
const TOP_LEVEL: &str = "(top level)";

/// Parses `text` into `T`, turning every problem into a located [`PolicyError`].
///
/// An empty document (nothing, only comments, or `~`) is `T::default()`.
pub(crate) fn from_str<T: DeserializeOwned + Default>(
    text: &str,
    origin: &str,
) -> Result<T, PolicyError> {
    // Pass one: the YAML itself. Errors here are syntax (and duplicate keys, which the
    // YAML spec forbids too), reported without a field path.
    let value: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(err) => return Err(syntax_error(&err, text, origin)),
    };
    if value.is_null() {
        return Ok(T::default());
    }
    // Pass two: the policy's shape and values.
    serde_yaml::from_str(text).map_err(|err| invalid_error(&err, origin))
}

/// The located error `seed` raises over `text` (a policy [`from_str`] already accepted), or
/// `None` when it raises none: for checks that run after parsing but belong to a node.
pub(crate) fn locate<'de, S: DeserializeSeed<'de, Value = ()>>(
    text: &'de str,
    origin: &str,
    seed: S,
) -> Option<PolicyError> {
    seed.deserialize(serde_yaml::Deserializer::from_str(text))
        .err()
        .map(|err| invalid_error(&err, origin))
}

/// When `text` is a Kubernetes ConfigMap manifest, its `data` entries as (key, text), sorted by
/// key; `None` for anything else (a policy has no `kind` field, so nothing is ambiguous).
pub(crate) fn configmap_data(text: &str) -> Option<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct ConfigMap {
        kind: String,
        #[serde(default)]
        data: std::collections::BTreeMap<String, String>,
    }
    let manifest: ConfigMap = serde_yaml::from_str(text).ok()?;
    (manifest.kind == "ConfigMap").then(|| manifest.data.into_iter().collect())
}

fn syntax_error(err: &serde_yaml::Error, text: &str, origin: &str) -> PolicyError {
    let rendered = err.to_string();
    if err.location().is_none() {
        if let Some(line) = second_document(text) {
            return PolicyError::Syntax {
                origin: origin.to_string(),
                line,
                column: 1,
                message: "a policy file holds one YAML document; a second one starts here"
                    .to_string(),
            };
        }
    }
    match err.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(dup) = duplicate_key(&rendered, &at, text, (loc.line(), loc.column())) {
                return dup.into_error(origin);
            }
            PolicyError::Syntax {
                origin: origin.to_string(),
                line: loc.line(),
                column: loc.column(),
                message: rendered.replacen(&at, "", 1),
            }
        }
        None => PolicyError::Document {
            origin: origin.to_string(),
            message: rendered,
        },
    }
}

/// A key given twice in one mapping. The parser reports it at the mapping's start; this
/// finds both occurrences in the text so the error points at the repeat.
struct DuplicateKey {
    field: String,
    key: String,
    first: Option<(usize, usize)>,
    at: (usize, usize),
}

impl DuplicateKey {
    fn into_error(self, origin: &str) -> PolicyError {
        let message = match self.first {
            Some((line, _)) => format!("given twice (first at line {line})"),
            None => format!("{:?} is given twice in this mapping", self.key),
        };
        PolicyError::Invalid {
            origin: origin.to_string(),
            line: self.at.0,
            column: self.at.1,
            field: self.field,
            message,
        }
    }
}

fn duplicate_key(
    rendered: &str,
    at: &str,
    text: &str,
    mapping: (usize, usize),
) -> Option<DuplicateKey> {
    let bare = rendered.strip_suffix(at).unwrap_or(rendered);
    let (path, message) = split_path(bare);
    let key = message
        .strip_prefix("duplicate entry with key \"")?
        .strip_suffix('"')?;
    if key.contains('\\') || key.contains('"') {
        return None;
    }
    let field = match path {
        Some(path) => format!("{path}.{key}"),
        None => key.to_string(),
    };
    let found = find_block_keys(text, mapping, key);
    let (first, at) = match found.as_slice() {
        [first, second, ..] => (Some(*first), *second),
        _ => (None, mapping),
    };
    Some(DuplicateKey {
        field,
        key: key.to_string(),
        first,
        at,
    })
}

/// Positions of `key:` in the block mapping that starts at `(line, column)`: lines whose
/// text at that column starts with the key, until the block ends (a line indented less).
fn find_block_keys(text: &str, (line, column): (usize, usize), key: &str) -> Vec<(usize, usize)> {
    let col = column.saturating_sub(1);
    let spellings = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    let mut found = Vec::new();
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let trimmed = l.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = l.len() - trimmed.len();
        if i + 1 > line && indent < col {
            break;
        }
        let at_column = l.get(col..).unwrap_or("");
        let lead_ok = i + 1 == line || indent == col;
        if lead_ok && spellings.iter().any(|s| at_column.starts_with(s.as_str())) {
            found.push((i + 1, col + 1));
        }
    }
    found
}

/// The 1-based line of a `---` that starts a second document, if the text has one (the
/// parser reports that without a position).
fn second_document(text: &str) -> Option<usize> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if seen_content {
                return Some(i + 1);
            }
            seen_content = true;
            continue;
        }
        let trimmed = line.trim_start();
        if !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%')) {
            seen_content = true;
        }
    }
    None
}

fn invalid_error(err: &serde_yaml::Error, origin: &str) -> PolicyError {
    let rendered = err.to_string();
    let Some(loc) = err.location() else {
        return PolicyError::Document {
            origin: origin.to_string(),
            message: rendered,
        };
    };
    let at = format!(" at line {} column {}", loc.line(), loc.column());
    let text = rendered.strip_suffix(&at).unwrap_or(&rendered);
    let (path, message) = split_path(text);
    PolicyError::Invalid {
        origin: origin.to_string(),
        line: loc.line(),
        column: loc.column(),
        field: field_path(path, message),
        message: message.to_string(),
    }
}

/// serde_yaml renders a located error as `path: message`, or just `message` at the top
/// level. Paths are built only from keys the policy already accepted (an unknown key fails
/// before it joins a path) and `[index]`, so they never hold a space.
fn split_path(text: &str) -> (Option<&str>, &str) {
    if let Some((head, rest)) = text.split_once(": ") {
        let is_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'));
        if is_path {
            return (Some(head), rest);
        }
    }
    (None, text)
}

/// The field a message is about: the container's path, plus the key serde names for an
/// unknown or missing field.
fn field_path(path: Option<&str>, message: &str) -> String {
    let named = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, named) {
        (None, None) => TOP_LEVEL.to_string(),
        (None, Some(name)) => name.to_string(),
        (Some(path), None) => path.to_string(),
        (Some(path), Some(name)) => format!("{path}.{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_but_not_messages() {
        assert_eq!(
            split_path("trusted_binaries[0].sha256[1]: not a SHA-256 digest"),
            (
                Some("trusted_binaries[0].sha256[1]"),
                "not a SHA-256 digest"
            )
        );
        assert_eq!(
            split_path("invalid type: string \"x\", expected a boolean"),
            (None, "invalid type: string \"x\", expected a boolean")
        );
    }

    #[test]
    fn finds_a_repeated_key_in_its_block() {
        let text =
            "checks:\n  disabled: []\n  # disabled: []\n  severity: {}\n  disabled: []\nx: 1\n";
        assert_eq!(find_block_keys(text, (2, 3), "disabled"), [(2, 3), (5, 3)]);
        let text = "- a: 1\n  b: 2\n  a: 3\n- a: 4\n";
        assert_eq!(find_block_keys(text, (1, 3), "a"), [(1, 3), (3, 3)]);
    }

    #[test]
    fn finds_the_second_document() {
        assert_eq!(second_document("---\na: 1\n---\nb: 2\n"), Some(3));
        assert_eq!(second_document("# c\n---\na: 1\n"), None);
        assert_eq!(second_document("a: 1\n--- \nb: 2\n"), Some(2));
    }

    #[test]
    fn names_the_unknown_or_missing_field() {
        assert_eq!(
            field_path(Some("exemptions[2]"), "missing field `reason`"),
            "exemptions[2].reason"
        );
        assert_eq!(
            field_path(None, "unknown field `trusted`, expected one of"),
            "trusted"
        );
        assert_eq!(field_path(None, "invalid type: sequence"), TOP_LEVEL);
    }
}
