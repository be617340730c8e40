//! The set of findings already announced as Events, persisted so a restart does not repeat
//! them: one JSON file written to a temporary name and renamed over the old one.

use crate::Error;
use nodeguard_model::{FindingKind, Timestamp};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// File name under `EventConfig::state_dir`.
pub(crate) const STATE_FILE: &str = "announced-events.json";
const VERSION: u32 = 1;

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TargetKind {
    Pod,
    Node,
}

/// The object an Event regards (the `regarding` reference, without the field path). For the
/// node the uid is filled in when the Event is sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Target {
    pub kind: TargetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Target {
    pub(crate) fn node(name: &str) -> Target {
        Target {
            kind: TargetKind::Node,
            namespace: None,
            name: name.to_string(),
            uid: None,
        }
    }
}

/// One finding the cluster has been told about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Announced {
    pub id: String,
    pub kind: FindingKind,
    /// When its Warning (or the summary that covered it) was accepted.
    pub at: Timestamp,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// For the Resolved note: what and where.
    #[serde(default)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Covered by a summary Event rather than one of its own: no Resolved Event follows.
    #[serde(default)]
    pub summarized: bool,
    /// Loaded from disk or recovered from the API server and not yet seen open in this
    /// process: resolved only once the scans that would report it have run since start.
    #[serde(skip)]
    pub unconfirmed: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    node: String,
    announced: Vec<Announced>,
}

pub(crate) fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Loads the announced set. `Ok(None)` when there is no file yet. Entries older than `ttl`
/// are dropped: their Events have expired from the API server, so announcing again is right.
pub(crate) fn load(
    dir: &Path,
    ttl: Duration,
    now: SystemTime,
) -> Result<Option<Vec<Announced>>, Error> {
    let path = state_path(dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::StateRead { path, source }),
    };
    let file: StateFile =
        serde_json::from_slice(&text).map_err(|source| Error::StateParse { path, source })?;
    let announced = file
        .announced
        .into_iter()
        .filter(|a| !expired(a.at, ttl, now))
        .map(|mut a| {
            a.unconfirmed = true;
            a
        })
        .collect();
    Ok(Some(announced))
}

pub(crate) fn expired(at: Timestamp, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(at.0).is_ok_and(|age| age > ttl)
}

/// Writes the announced set atomically: a temporary file in the same directory, flushed to
/// disk, renamed over the old one.
pub(crate) fn save<'a>(
    dir: &Path,
    node: &str,
    announced: impl Iterator<Item = &'a Announced>,
) -> Result<(), Error> {
    let path = state_path(dir);
    let write_err = |source| Error::StateWrite {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut entries: Vec<&Announced> = announced.collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let file = StateFileRef {
        version: VERSION,
        node,
        announced: entries,
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| write_err(std::io::Error::other(e)))?;
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let mut out = std::fs::File::create(&tmp).map_err(write_err)?;
    out.write_all(&bytes).map_err(write_err)?;
    out.sync_all().map_err(write_err)?;
    drop(out);
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    // Make the rename itself durable; not every filesystem allows syncing a directory.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    node: &'a str,
    announced: Vec<&'a Announced>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: SystemTime) -> Announced {
        Announced {
            id: id.into(),
            kind: FindingKind::SetuidFile,
            at: Timestamp(at),
            target: Target {
                kind: TargetKind::Pod,
                namespace: Some("shop".into()),
                name: "web-0".into(),
                uid: Some("u1".into()),
            },
            field_path: Some(format!("spec.containers{{app}}.findings{{{id}}}")),
            subject: "/usr/bin/passwd".into(),
            container: Some("app".into()),
            summarized: false,
            unconfirmed: false,
        }
    }

    #[test]
    fn round_trips_and_drops_entries_older_than_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(3600);
        assert!(load(dir.path(), ttl, now).unwrap().is_none());
        let fresh = entry("aaaa", now - Duration::from_secs(60));
        let stale = entry("bbbb", now - Duration::from_secs(7200));
        save(dir.path(), "node-a", [&fresh, &stale].into_iter()).unwrap();
        let loaded = load(dir.path(), ttl, now).unwrap().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, "aaaa");
        assert!(loaded[0].unconfirmed);
        assert_eq!(loaded[0].target, fresh.target);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(state_path(dir.path()), b"{not json").unwrap();
        let err = load(dir.path(), Duration::from_secs(1), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains(STATE_FILE), "{err}");
    }
}
