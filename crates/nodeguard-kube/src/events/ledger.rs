//! The set of findings already announced as Events, persisted so a restart does not repeat
//! them: one JSON file under the state directory, read and written through
//! [`crate::state_file`] (never through a symlink, regular file only, at most
//! [`MAX_STATE_BYTES`], atomic replace).

use crate::publish::placement::Target;
use crate::Error;
use nodeguard_model::{FindingKind, Timestamp};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// File name under `EventConfig::state_dir`.
pub(crate) const STATE_FILE: &str = "announced-events.json";
const VERSION: u32 = 1;
/// The largest announced-findings file read or written. An entry is about 500 bytes (its
/// subject is kept to [`MAX_SUBJECT_BYTES`]), so this holds some 15,000 announced findings;
/// a larger file is refused and the agent starts with an empty set (it announces what is
/// open again) rather than reading it whole.
pub(crate) const MAX_STATE_BYTES: u64 = 8 << 20;
/// Longest subject or container kept per entry: the Resolved note shows no more.
const MAX_SUBJECT_BYTES: usize = 240;

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
    let text = match crate::state_file::read(dir, STATE_FILE, MAX_STATE_BYTES) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
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

/// Writes the announced set atomically through [`crate::state_file::write`]. Subjects and
/// containers are kept cleaned and short, so the file stays far below [`MAX_STATE_BYTES`];
/// a set that would not fit is not written (a restart then announces again).
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
    let mut entries: Vec<Announced> = announced
        .map(|a| Announced {
            subject: nodeguard_model::clean(&a.subject, MAX_SUBJECT_BYTES),
            container: a
                .container
                .as_deref()
                .map(|c| nodeguard_model::clean(c, MAX_SUBJECT_BYTES)),
            ..a.clone()
        })
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let file = StateFileRef {
        version: VERSION,
        node,
        announced: entries.iter().collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| write_err(std::io::Error::other(e)))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(write_err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "{} announced findings make {} bytes, more than the {MAX_STATE_BYTES} a state file may have",
                entries.len(),
                bytes.len()
            ),
        )));
    }
    crate::state_file::write(dir, STATE_FILE, &bytes).map_err(write_err)
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
    use crate::publish::placement::TargetKind;

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

    #[test]
    fn a_huge_or_symlinked_file_is_refused_saying_why_and_a_planted_temp_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let huge = std::fs::File::create(state_path(&state)).unwrap();
        huge.set_len(512 << 20).unwrap();
        let err = load(&state, Duration::from_secs(1), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
        assert!(err.to_string().contains(STATE_FILE), "{err}");

        // The temporary name links to a file root would overwrite; the save goes around it.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, state.join(format!(".{STATE_FILE}.tmp"))).unwrap();
        let now = SystemTime::now();
        let mut e = entry("aaaa", now);
        e.subject = format!("/tmp/{}\u{1b}", "x".repeat(10_000));
        save(&state, "node-a", [&e].into_iter()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let loaded = load(&state, Duration::from_secs(60), now).unwrap().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(loaded[0].subject.len() <= MAX_SUBJECT_BYTES);
        assert!(!loaded[0].subject.chars().any(char::is_control));

        // The file itself a symlink: refused, not read.
        std::fs::remove_file(state_path(&state)).unwrap();
        std::os::unix::fs::symlink(&victim, state_path(&state)).unwrap();
        let err = load(&state, Duration::from_secs(1), now).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
