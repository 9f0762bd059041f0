//! `edge-change check`: one pair, or every pair of a CSV on all cores, as a short human summary or
//! one JSON object per pair (schema 1). Exit codes: 0 no change, 1 change, 2 error; with --pairs
//! 0 when every row was analysed and 2 when any failed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use image::RgbImage;

use super::memo::{FileId, Key, Memo};
use crate::analysis::{
    self, decode, fit_to, visualize, AnalysisError, Analyzer, CaptureAnalysis, Comparison, Encoder,
    Mask, Settings,
};
use crate::cli::CheckArgs;
use crate::config::{self, Config};
use crate::model;
use crate::report::{self, ErrorReport, ModelRef, Report, Timings, SCHEMA};

const EXIT_CHANGE: u8 = 1;
const EXIT_ERROR: u8 = 2;

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut settings = config.analysis_settings();
    if let Some(t) = args.threshold {
        if !(t.is_finite() && t > 0.0) {
            bail!("--threshold {t}: must be a positive number");
        }
        settings.threshold = Some(t);
    }
    let job = Job {
        model: args.model.clone().unwrap_or_else(|| config.model.path.clone()),
        settings,
        max_pixels: config.analysis.max_pixels,
        json: args.json,
    };
    match (&args.pairs, &args.before, &args.after) {
        (Some(csv), _, _) => job.pairs(csv, config.worker_threads()),
        (None, Some(before), Some(after)) => {
            let pair =
                Pair { before: before.clone(), after: after.clone(), mask: args.mask.clone() };
            Ok(job.single(&pair, args.visualize.as_deref()))
        }
        _ => bail!("check needs BEFORE and AFTER, or --pairs FILE.csv"),
    }
}

/// What every pair of one invocation shares.
#[derive(Clone)]
struct Job {
    /// Empty = the default encoding, found by `model::locate`.
    model: PathBuf,
    settings: Settings,
    max_pixels: u64,
    json: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Pair {
    before: PathBuf,
    after: PathBuf,
    mask: Option<PathBuf>,
}

impl Pair {
    fn names(&self) -> (String, String) {
        (self.before.display().to_string(), self.after.display().to_string())
    }
}

/// Both captures decoded, the after one fitted to the before's size.
struct Decoded {
    before: RgbImage,
    after: RgbImage,
    mask: Option<Mask>,
    decode_ms: f64,
}

/// A CSV row that names no usable pair.
#[derive(Debug)]
struct BadRow {
    before: String,
    after: String,
    message: String,
}

/// An analysed pair with what its report needs besides the names.
struct Analysed {
    comparison: Comparison,
    timings: Timings,
    model: ModelRef,
}

/// A pair's outcome, ready to print.
struct Outcome {
    before: String,
    after: String,
    result: Result<Analysed, String>,
}

impl Job {
    fn load(&self) -> anyhow::Result<Analyzer> {
        let path = model::locate(Some(&self.model))?;
        let encoder = Encoder::load(&path)?;
        Ok(Analyzer::new(encoder, self.settings.clone()))
    }

    /// The model loads on its own thread while the captures decode (each on a thread of its
    /// own): a bad capture is still reported without waiting for the model, and a good pair
    /// does not wait for both in turn. One pair has the machine to itself, so the tiles of both
    /// captures are encoded on every core.
    fn single(&self, pair: &Pair, visualize_to: Option<&Path>) -> ExitCode {
        let (before, after) = pair.names();
        let loading = {
            let job = self.clone();
            std::thread::spawn(move || job.load())
        };
        let result =
            decode_pair(pair, self.max_pixels).map_err(anyhow::Error::from).and_then(|decoded| {
                let analyzer =
                    loading.join().map_err(|_| anyhow!("loading the model panicked"))??;
                let analyzer = analyzer.with_tile_threads(config::cores());
                // `total` is decode + encode: the model load is not the pair's time.
                let (comparison, timings) = analyse(&analyzer, &decoded)?;
                if let Some(out) = visualize_to {
                    let picture = visualize::render(
                        &decoded.before,
                        &decoded.after,
                        decoded.mask.as_ref(),
                        &comparison,
                    );
                    picture
                        .save_with_format(out, image::ImageFormat::Png)
                        .with_context(|| format!("{}: cannot write", out.display()))?;
                }
                let model = ModelRef::from(analyzer.encoder().card());
                Ok(Analysed { comparison, timings, model })
            });
        let code = match &result {
            Ok(analysed) if analysed.comparison.changed => EXIT_CHANGE,
            Ok(_) => 0,
            Err(_) => EXIT_ERROR,
        };
        let result = result.map_err(|error| format!("{error:#}"));
        print_outcome(&Outcome { before, after, result }, self.json);
        ExitCode::from(code)
    }

    /// Every row of the CSV on `workers` threads, printed in input order.
    fn pairs(&self, csv: &Path, workers: usize) -> anyhow::Result<ExitCode> {
        let rows = read_pairs(csv)?;
        let analyzer = self.load()?;
        let model = ModelRef::from(analyzer.encoder().card());
        let workers = workers.clamp(1, rows.len().max(1));
        let progress = Progress::new(rows.len());
        let memo = Memo::default();
        let next = AtomicUsize::new(0);
        let mut failed = false;
        std::thread::scope(|scope| {
            // Unbounded, but it never holds more than one message per CSV row (small results).
            let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
            for _ in 0..workers {
                let tx = tx.clone();
                let (rows, next, analyzer, model, memo) = (&rows, &next, &analyzer, &model, &memo);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = rows.get(i) else { break };
                    let outcome = match row {
                        Ok(pair) => {
                            let (before, after) = pair.names();
                            let result = analyse_row(analyzer, pair, self.max_pixels, memo)
                                .map(|(comparison, timings)| Analysed {
                                    comparison,
                                    timings,
                                    model: model.clone(),
                                })
                                .map_err(|e| e.to_string());
                            Outcome { before, after, result }
                        }
                        Err(bad) => Outcome {
                            before: bad.before.clone(),
                            after: bad.after.clone(),
                            result: Err(bad.message.clone()),
                        },
                    };
                    if tx.send((i, outcome)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            // Results arrive in completion order; hold them until their turn.
            let mut waiting = BTreeMap::new();
            let mut printed = 0;
            for (i, outcome) in rx {
                waiting.insert(i, outcome);
                while let Some(outcome) = waiting.remove(&printed) {
                    failed |= outcome.result.is_err();
                    progress.clear();
                    print_outcome(&outcome, self.json);
                    printed += 1;
                    progress.show(printed);
                }
            }
            progress.finish();
        });
        Ok(ExitCode::from(if failed { EXIT_ERROR } else { 0 }))
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Decodes both captures, each on a thread of its own (a before-capture error is reported first),
/// and the mask.
fn decode_pair(pair: &Pair, max_pixels: u64) -> Result<Decoded, AnalysisError> {
    let started = Instant::now();
    let (before, after) = std::thread::scope(|scope| {
        let after = scope.spawn(|| decode::decode_file(&pair.after, max_pixels));
        let before = decode::decode_file(&pair.before, max_pixels);
        (before, analysis::join(after))
    });
    let (before, after) = (before?, after?);
    let mask = load_mask(pair, max_pixels, before.dimensions())?;
    let after = fit_to(after, before.dimensions());
    Ok(Decoded { before, after, mask, decode_ms: ms(started.elapsed()) })
}

/// The pair's mask, checked against the before-capture's size here too (embed_capture does) so
/// that a wrong mask is reported before the model loads.
fn load_mask(
    pair: &Pair,
    max_pixels: u64,
    size: (u32, u32),
) -> Result<Option<Mask>, AnalysisError> {
    let mask = pair.mask.as_deref().map(|m| Mask::load(m, max_pixels)).transpose()?;
    mask.as_ref().map(|m| m.check_size(size)).transpose()?;
    Ok(mask)
}

fn analyse(analyzer: &Analyzer, d: &Decoded) -> Result<(Comparison, Timings), AnalysisError> {
    let started = Instant::now();
    let (before, after) = analyzer.embed_pair(&d.before, &d.after, d.mask.as_ref())?;
    let comparison = analyzer.compare(&before, &after)?;
    let encode = ms(started.elapsed());
    Ok((comparison, Timings { decode: d.decode_ms, encode, total: d.decode_ms + encode }))
}

/// A capture of a row: analysed by an earlier row, or decoded and still to be encoded.
enum Side {
    Known(Arc<CaptureAnalysis>),
    Decoded(RgbImage),
}

/// The row's files as the memo knows them; `None` when one cannot be looked at.
fn file_ids(pair: &Pair) -> Option<(FileId, FileId, Option<FileId>)> {
    let mask = match pair.mask.as_deref() {
        Some(m) => Some(FileId::of(m)?),
        None => None,
    };
    Some((FileId::of(&pair.before)?, FileId::of(&pair.after)?, mask))
}

/// One CSV row. A capture the memo holds (same file, analysed size and mask) is compared
/// without being decoded or encoded again; errors are those of `decode_pair`, in its order.
fn analyse_row(
    analyzer: &Analyzer,
    pair: &Pair,
    max_pixels: u64,
    memo: &Memo,
) -> Result<(Comparison, Timings), AnalysisError> {
    let started = Instant::now();
    let Some((before_id, after_id, mask_id)) = file_ids(pair) else {
        // A file that cannot be looked at: decoding it says why.
        return analyse(analyzer, &decode_pair(pair, max_pixels)?);
    };

    let known = |file, size| memo.get(&Key { file, size, mask: mask_id });
    let before = match memo.size_of(before_id).and_then(|size| known(before_id, size)) {
        Some(analysis) => Side::Known(analysis),
        None => {
            let image = decode::decode_file(&pair.before, max_pixels)?;
            memo.remember_size(before_id, image.dimensions());
            Side::Decoded(image)
        }
    };
    let size = match &before {
        Side::Known(analysis) => (analysis.width, analysis.height),
        Side::Decoded(image) => image.dimensions(),
    };
    let after = match known(after_id, size) {
        Some(analysis) => Side::Known(analysis),
        None => {
            let image = decode::decode_file(&pair.after, max_pixels)?;
            memo.remember_size(after_id, image.dimensions());
            Side::Decoded(fit_to(image, size))
        }
    };
    let mask = match (&before, &after) {
        // Both known: their mask was checked when they were analysed.
        (Side::Known(_), Side::Known(_)) => None,
        _ => load_mask(pair, max_pixels, size)?,
    };
    let decode_ms = ms(started.elapsed());

    let encoding = Instant::now();
    let analysed = |side, file| match side {
        Side::Known(analysis) => Ok(analysis),
        Side::Decoded(image) => {
            let analysis = Arc::new(analyzer.embed_capture(&image, mask.as_ref())?);
            memo.insert(Key { file, size, mask: mask_id }, Arc::clone(&analysis));
            Ok::<_, AnalysisError>(analysis)
        }
    };
    let before = analysed(before, before_id)?;
    let after = analysed(after, after_id)?;
    let comparison = analyzer.compare(&before, &after)?;
    let encode = ms(encoding.elapsed());
    Ok((comparison, Timings { decode: decode_ms, encode, total: ms(started.elapsed()) }))
}

/// A pair's result on stdout (JSON or summary); an error also as one line on stderr.
fn print_outcome(outcome: &Outcome, json: bool) {
    let (before, after) = (outcome.before.as_str(), outcome.after.as_str());
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic; the exit code still tells.
    let _ = match &outcome.result {
        Ok(Analysed { comparison, timings, model }) if json => {
            let shown = report::rounded(comparison);
            let report = Report {
                schema: SCHEMA,
                before,
                after,
                comparison: &shown,
                model: model.clone(),
                timings_ms: timings.rounded(),
            };
            writeln!(stdout, "{}", serde_json::to_string(&report).unwrap_or_default())
        }
        Ok(Analysed { comparison, .. }) => write!(stdout, "{}", summary(before, after, comparison)),
        Err(error) => {
            eprintln!("error: {error}");
            if json {
                let report = ErrorReport { schema: SCHEMA, before, after, error: error.clone() };
                writeln!(stdout, "{}", serde_json::to_string(&report).unwrap_or_default())
            } else {
                Ok(())
            }
        }
    };
}

/// The human summary: decision, distance vs threshold, greenery, changed tiles.
fn summary(before: &str, after: &str, c: &Comparison) -> String {
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    let changed_tiles: Vec<_> = c.tiles.iter().filter(|t| t.changed).collect();
    let mut s = if c.changed {
        format!(
            "CHANGED  {before} -> {after}\n  distance {:.3} > threshold {:.3} ({} of {} tiles changed)\n",
            c.distance,
            c.threshold,
            changed_tiles.len(),
            c.tiles.len()
        )
    } else {
        format!(
            "no change  {before} -> {after}\n  distance {:.3} <= threshold {:.3} ({} tiles)\n",
            c.distance,
            c.threshold,
            c.tiles.len()
        )
    };
    s += &format!(
        "  greenery (HSV) {} -> {} ({}); learned {} -> {} ({}); direction {}\n",
        pct(c.vegetation.before),
        pct(c.vegetation.after),
        c.vegetation.direction.as_str(),
        pct(c.learned.before),
        pct(c.learned.after),
        c.learned.direction.as_str(),
        c.direction.as_str(),
    );
    if !changed_tiles.is_empty() {
        let list: Vec<String> = changed_tiles
            .iter()
            .map(|t| {
                format!("{},{} {}x{} ({:.3})", t.tile.x, t.tile.y, t.tile.w, t.tile.h, t.distance)
            })
            .collect();
        s += &format!("  changed tiles: {}\n", list.join(", "));
    }
    s
}

/// Rows of a pairs CSV: a header naming `before` and `after` (and optionally `mask`), other
/// columns ignored, paths relative to the CSV's folder. A bad row is an error for that row only;
/// an unreadable file or a header without the columns fails the whole CSV.
fn read_pairs(csv_path: &Path) -> anyhow::Result<Vec<Result<Pair, BadRow>>> {
    let name = csv_path.display().to_string();
    let bytes = std::fs::read(csv_path).with_context(|| format!("{name}: cannot read"))?;
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(&bytes[..]);
    let header = reader.headers().map_err(|e| anyhow!("{name}: malformed header: {e}"))?.clone();
    let column = |wanted: &str| header.iter().position(|h| h.eq_ignore_ascii_case(wanted));
    let (Some(before_col), Some(after_col)) = (column("before"), column("after")) else {
        bail!(
            "{name}: malformed pairs CSV: the header row must name `before` and `after` columns (found {:?})",
            header.iter().collect::<Vec<_>>()
        );
    };
    let mask_col = column("mask");
    let base = csv_path.parent().unwrap_or(Path::new(""));
    let resolve = |p: &str| base.join(p);
    let rows = reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| BadRow {
                before: String::new(),
                after: String::new(),
                message: format!("{name}: malformed row: {e}"),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |col: usize| record.get(col).unwrap_or("").to_owned();
            let (before, after) = (field(before_col), field(after_col));
            if before.is_empty() || after.is_empty() {
                return Err(BadRow {
                    before,
                    after,
                    message: format!(
                        "{name}: line {line}: `before` and `after` must both be given"
                    ),
                });
            }
            let mask = mask_col.map(field).filter(|m| !m.is_empty()).map(|m| resolve(&m));
            Ok(Pair { before: resolve(&before), after: resolve(&after), mask })
        })
        .collect();
    Ok(rows)
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
struct Progress {
    total: usize,
    enabled: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, enabled: total > 0 && std::io::stderr().is_terminal() }
    }

    fn show(&self, done: usize) {
        if self.enabled {
            let filled = 30 * done / self.total;
            eprint!("\r[{}{}] {done}/{}", "=".repeat(filled), " ".repeat(30 - filled), self.total);
        }
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write csv");
        path
    }

    #[test]
    fn pairs_csv_resolves_paths_and_keeps_bad_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = write(
            dir.path(),
            "p.csv",
            "id,before,after,mask\n1,a.png,b.png,\n2,/abs/c.png,d.png,m.png\n3,e.png,,\n4,f.png\n",
        );
        let rows = read_pairs(&csv).expect("reads");
        assert_eq!(rows.len(), 4);
        let first = rows[0].as_ref().expect("row 1");
        assert_eq!(first.before, dir.path().join("a.png"));
        assert_eq!(first.mask, None);
        let second = rows[1].as_ref().expect("row 2");
        assert_eq!(second.before, PathBuf::from("/abs/c.png"));
        assert_eq!(second.mask, Some(dir.path().join("m.png")));
        for bad in &rows[2..] {
            let err = &bad.as_ref().expect_err("bad row").message;
            assert!(err.contains("p.csv: line"), "{err}");
        }
    }

    #[test]
    fn pairs_csv_without_the_columns_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = write(dir.path(), "p.csv", "first,second\na.png,b.png\n");
        let err = read_pairs(&csv).expect_err("refused").to_string();
        assert!(err.contains("p.csv: malformed pairs CSV"), "{err}");
        assert!(read_pairs(&dir.path().join("missing.csv")).is_err());
    }
}
