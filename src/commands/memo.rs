//! Capture analyses shared by the rows of one `check --pairs` run.
//!
//! A CSV of pairs from a time series names each capture in many rows (the first 500 Brunei pairs
//! of ../shared/data name 84 files), and, as in the daemon, a capture needs encoding only once:
//! its tiles' embeddings and greenery are all a comparison reads. A row whose captures are known
//! is compared without decoding or encoding them again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::analysis::CaptureAnalysis;

/// Tiles held at most (~0.6 KB each with a 128-value embedding, so ~20 MB). Past it the memo is
/// emptied and refilled: the rows of a CSV usually come site by site, so what is dropped is
/// mostly done with.
const MAX_TILES: usize = 32 * 1024;

/// A file as it is now: the same inode, size and modification time is the same content for the
/// length of one run (captures are not rewritten under a running `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    /// `None` when the file cannot be looked at: the caller then decodes it and reports why.
    pub fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        Some(FileId { dev: m.dev(), ino: m.ino(), len: m.len(), mtime_ns })
    }
}

/// What an analysis depends on besides the model and settings (fixed for a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub file: FileId,
    /// The analysed size: an after-capture fitted to a before of another size differs.
    pub size: (u32, u32),
    pub mask: Option<FileId>,
}

#[derive(Default)]
struct Inner {
    analyses: HashMap<Key, Arc<CaptureAnalysis>>,
    /// Decoded size of each file seen, so a before-capture is found without decoding it.
    sizes: HashMap<FileId, (u32, u32)>,
    tiles: usize,
}

/// Shared by the worker threads; two that miss the same capture at once both encode it (the
/// results are equal), which costs less than making one wait.
#[derive(Default)]
pub struct Memo {
    inner: Mutex<Inner>,
}

impl Memo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing is left half-written under the lock, so a poisoned one is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn size_of(&self, file: FileId) -> Option<(u32, u32)> {
        self.lock().sizes.get(&file).copied()
    }

    pub fn get(&self, key: &Key) -> Option<Arc<CaptureAnalysis>> {
        self.lock().analyses.get(key).cloned()
    }

    pub fn remember_size(&self, file: FileId, size: (u32, u32)) {
        self.lock().sizes.insert(file, size);
    }

    pub fn insert(&self, key: Key, analysis: Arc<CaptureAnalysis>) {
        let mut inner = self.lock();
        if inner.tiles + analysis.tiles.len() > MAX_TILES {
            inner.analyses.clear();
            inner.tiles = 0;
        }
        inner.tiles += analysis.tiles.len();
        if let Some(old) = inner.analyses.insert(key, analysis) {
            inner.tiles -= old.tiles.len();
        }
    }

    #[cfg(test)]
    fn held_tiles(&self) -> usize {
        self.lock().tiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{TileBox, TileEmbedding};

    fn analysis(tiles: usize) -> Arc<CaptureAnalysis> {
        let tile = TileEmbedding {
            tile: TileBox { x: 0, y: 0, w: 1, h: 1 },
            embedding: vec![0.0; 4],
            valid_px: 1,
        };
        Arc::new(CaptureAnalysis {
            width: 1,
            height: 1,
            model_sha256: String::new(),
            tiles: vec![tile; tiles],
            greenery: 0.0,
            learned_veg: 0.0,
        })
    }

    fn key(ino: u64) -> Key {
        let file = FileId { dev: 1, ino, len: 10, mtime_ns: 5 };
        Key { file, size: (1, 1), mask: None }
    }

    #[test]
    fn a_file_is_identified_by_inode_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"one").unwrap();
        assert_eq!(FileId::of(&a), FileId::of(&a));
        assert_ne!(FileId::of(&a), FileId::of(&b), "another file with the same bytes");
        let before = FileId::of(&a);
        std::fs::write(&a, b"three").unwrap();
        assert_ne!(FileId::of(&a), before, "rewritten with another size");
        assert_eq!(FileId::of(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_size_and_mask_are_part_of_the_key() {
        let memo = Memo::default();
        memo.insert(key(1), analysis(2));
        assert!(memo.get(&key(1)).is_some());
        assert!(memo.get(&Key { size: (2, 1), ..key(1) }).is_none());
        assert!(memo.get(&Key { mask: Some(key(9).file), ..key(1) }).is_none());
    }

    #[test]
    fn past_the_tile_budget_the_memo_starts_again() {
        let memo = Memo::default();
        let half = MAX_TILES / 2;
        memo.insert(key(1), analysis(half));
        memo.insert(key(1), analysis(half)); // replacing counts once
        memo.insert(key(2), analysis(half));
        assert_eq!(memo.held_tiles(), MAX_TILES);
        memo.insert(key(3), analysis(1));
        assert_eq!(memo.held_tiles(), 1);
        assert!(memo.get(&key(1)).is_none() && memo.get(&key(3)).is_some());
    }
}
