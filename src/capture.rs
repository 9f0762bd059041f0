//! `Capture`: the one type flowing from the sources (directory, command, http) downstream to pairing,
//! analysis and the state store. A capture that failed still flows, so the daemon can publish an `error`
//! event for it and keep the site's previous good capture.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// One image taken (or one failed attempt at taking it) for one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    /// The site it belongs to: pairing compares it with the previous good capture of this site.
    pub site: String,
    /// When the image was taken: the file's mtime for a directory source, the start of the command or
    /// request otherwise.
    pub taken_at: SystemTime,
    /// What events call it (`capture`/`previous`): the file's path relative to the watched directory, the
    /// snapshot URL, or `<source>@<RFC 3339 time>` for a command.
    pub name: String,
    pub data: CaptureData,
    /// The configured source (the `[sources.<name>]` table) it came from.
    pub source: String,
}

/// The image itself, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureData {
    /// A complete file in a watched directory; `stamp` identifies this version of it so that it is never
    /// processed twice (see [`crate::state::ProcessedFile`]).
    Path { path: PathBuf, stamp: FileStamp },
    /// Encoded image bytes (a command's stdout, an HTTP body).
    Bytes(Vec<u8>),
    /// The capture failed (timeout, exit status, HTTP status, size limit, I/O): one line saying why.
    Failed(String),
}

/// Identifies one version of a file: a file rewritten under the same name is a new capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(metadata: &std::fs::Metadata) -> FileStamp {
        let mtime = metadata.modified().unwrap_or(UNIX_EPOCH);
        FileStamp { size: metadata.len(), mtime_ns: nanos_since_epoch(mtime) }
    }

    pub fn mtime(&self) -> SystemTime {
        match u64::try_from(self.mtime_ns) {
            Ok(ns) => UNIX_EPOCH + Duration::from_nanos(ns),
            Err(_) => UNIX_EPOCH - Duration::from_nanos(self.mtime_ns.unsigned_abs()),
        }
    }
}

impl Capture {
    /// The encoded image: reads the file for a path capture, borrows the bytes otherwise. Reading is
    /// blocking I/O: call it from the analysis worker, not the async runtime.
    pub fn read(&self) -> Result<Cow<'_, [u8]>, CaptureFailed> {
        match &self.data {
            CaptureData::Path { path, .. } => std::fs::read(path)
                .map(Cow::Owned)
                .map_err(|e| CaptureFailed(format!("{}: cannot read: {e}", path.display()))),
            CaptureData::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            CaptureData::Failed(reason) => Err(CaptureFailed(reason.clone())),
        }
    }

    /// The file's identity, for a capture that came from a watched directory.
    pub fn stamp(&self) -> Option<FileStamp> {
        match &self.data {
            CaptureData::Path { stamp, .. } => Some(*stamp),
            _ => None,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.data, CaptureData::Failed(_))
    }
}

/// A capture that has no image; the message names the source, file or URL and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CaptureFailed(pub String);

/// Lower-case hex sha256 of the image bytes: how duplicates are recognised and files remembered.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `2026-05-01T10:15:00.123Z`, the form of every time in events.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Milliseconds since the Unix epoch, the form times are stored in.
pub fn millis_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`millis_since_epoch`].
pub fn from_millis_since_epoch(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs()),
    }
}

fn nanos_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_777_630_500_123);
        assert_eq!(from_millis_since_epoch(millis_since_epoch(t)), t);
        assert_eq!(rfc3339(t), "2026-05-01T10:15:00.123Z");
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(millis_since_epoch(before), -1500);
        assert_eq!(from_millis_since_epoch(-1500), before);
    }

    #[test]
    fn stamp_of_a_real_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.png");
        std::fs::write(&path, b"12345").expect("write");
        let meta = std::fs::metadata(&path).expect("stat");
        let stamp = FileStamp::of(&meta);
        assert_eq!(stamp.size, 5);
        assert_eq!(stamp.mtime(), meta.modified().expect("mtime"));
    }

    #[test]
    fn reading_each_kind_of_capture() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.png");
        std::fs::write(&path, b"png").expect("write");
        let stamp = FileStamp::of(&std::fs::metadata(&path).expect("stat"));
        let mut capture = Capture {
            site: "north".into(),
            taken_at: SystemTime::now(),
            name: "a.png".into(),
            data: CaptureData::Path { path: path.clone(), stamp },
            source: "north".into(),
        };
        assert_eq!(capture.read().expect("read").as_ref(), b"png");
        assert_eq!(capture.stamp(), Some(stamp));
        std::fs::remove_file(&path).expect("remove");
        let err = capture.read().expect_err("gone");
        assert!(err.0.contains("a.png: cannot read"), "{err}");
        capture.data = CaptureData::Failed("timed out after 30s".into());
        assert!(capture.is_failed());
        assert_eq!(capture.read().expect_err("failed").0, "timed out after 30s");
    }

    #[test]
    fn sha256_is_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
