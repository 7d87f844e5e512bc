//! The packed weight matrices ([`QRows`]) of a GGUF, kept in a file beside it
//! (`<file>.declab-qrows`) and mapped back at the next load instead of rebuilt: Gemma 3 270M's
//! 178 MB embedding took about 325 ms to read and pack; mapping it and copying candle's tensors
//! out of the GGUF now take 10-35 ms together (`bench/perf-notes.md`). Its pages come in from
//! the page cache when the first forward reads them, as llama.cpp's mapped GGUF does.
//!
//! Format (little-endian, this layout's version in the first line):
//! ```text
//! declab-qrows 1 le g16\n          magic (the tile layout: 16-row groups, 64-byte lines)
//! <stamp of the GGUF>\n             size, mtime, inode, ctime: the file the packing came from
//! zero padding to 4096
//! sections, each at a multiple of 4096: quants, scales, minima of each matrix
//! index: one line per matrix: key \t kind \t k \t parts \t 6 offsets and lengths
//! trailer: the index's offset and length (u64 each)
//! ```
//! A file whose stamp, length, index or section bounds do not match is ignored (and rewritten).
//! The file is written whole under a temporary name and renamed ([`Writer`]),
//! so a reader never maps half of one. Nothing is checksummed: like a mapped GGUF, the file is
//! trusted once its shape checks out (computing a digest would read all of it at load, the cost
//! this cache removes).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::qrows::{QKind, QRows};

/// First line of a cache file. Bump the version when [`QRows`]' tile layout changes.
const MAGIC: &str = "declab-qrows 2 le g16\n";
/// Sections start on page boundaries (so every element type is aligned in the mapping).
const ALIGN: u64 = 4096;

/// Where the packed matrices of `gguf` are cached.
pub fn cache_path(gguf: &Path) -> PathBuf {
    super::beside(gguf, ".declab-qrows")
}

/// The cache's second line for `gguf` as it is now; `None` where the platform gives no stamp
/// (then nothing is cached).
fn stamp(gguf: &Path) -> Option<String> {
    let meta = std::fs::metadata(gguf).ok()?;
    Some(format!("{}\n", super::file_stamp(&meta)?))
}

/// A storage of `T`s: built in memory, or a range of a mapped cache file.
pub(crate) enum Slab<T: Plain> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
        _t: std::marker::PhantomData<T>,
    },
}

/// Types any bit pattern of which is a valid value, with no padding: what a mapped file may
/// hold.
///
/// # Safety
/// Implementors must be `repr(C)`/primitive types without padding or invalid bit patterns.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: f16 is a u16.
unsafe impl Plain for half::f16 {}

impl<T: Plain> Slab<T> {
    /// `len` values at byte `start` of `map`; `None` when they do not lie inside it or are not
    /// aligned for `T`.
    pub(crate) fn mapped(map: &Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = start.checked_add(bytes)?;
        let aligned = (map.as_ptr() as usize + start).is_multiple_of(std::mem::align_of::<T>());
        (end <= map.len() && aligned).then(|| Slab::Mapped {
            map: map.clone(),
            start,
            len,
            _t: std::marker::PhantomData,
        })
    }

    /// The values as bytes (for writing them out).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        let s: &[T] = self;
        // SAFETY: `T: Plain` has no padding, so every byte of the slice is initialised.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
    }
}

impl<T: Plain> std::ops::Deref for Slab<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Slab::Owned(v) => v,
            // SAFETY: `mapped` checked bounds and alignment; the mapping lives as long as the
            // Arc, is read-only, and `T: Plain` accepts any bytes.
            Slab::Mapped {
                map, start, len, ..
            } => unsafe { std::slice::from_raw_parts(map.as_ptr().add(*start).cast::<T>(), *len) },
        }
    }
}

/// What the index says of one matrix.
struct Entry {
    kind: QKind,
    k: usize,
    parts: Vec<usize>,
    /// (byte offset, element count) of the quants (64-byte lines), scales and minima.
    sections: [(usize, usize); 3],
}

/// The cache of one GGUF, mapped.
pub(crate) struct Cache {
    map: Arc<Mmap>,
    entries: HashMap<String, Entry>,
}

fn kind_name(kind: QKind) -> &'static str {
    match kind {
        QKind::Q8_0 => "q8_0",
        QKind::Q5_0 => "q5_0",
        QKind::Q4_1 => "q4_1",
        QKind::Q4K => "q4_k",
        QKind::Q6K => "q6_k",
    }
}

impl Cache {
    /// The cache of `gguf` when one exists for the file as it is now and its shape checks out.
    pub(crate) fn open(gguf: &Path) -> Option<Cache> {
        let stamp = stamp(gguf)?;
        let file = std::fs::File::open(cache_path(gguf)).ok()?;
        // SAFETY: the cache is only ever replaced by a rename (never written in place), so the
        // mapped inode's contents do not change under us.
        let map = Arc::new(unsafe { Mmap::map(&file) }.ok()?);
        let head = map.get(..MAGIC.len() + stamp.len())?;
        if head != [MAGIC.as_bytes(), stamp.as_bytes()].concat() {
            return None;
        }
        let n = map.len();
        let tail = map.get(n.checked_sub(16)?..)?;
        let at = u64::from_le_bytes(tail[..8].try_into().ok()?) as usize;
        let len = u64::from_le_bytes(tail[8..].try_into().ok()?) as usize;
        if at.checked_add(len)? != n - 16 {
            return None;
        }
        let index = std::str::from_utf8(&map[at..at + len]).ok()?;
        let mut entries = HashMap::new();
        for line in index.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [key, kind, k, parts, sections @ ..] = f.as_slice() else {
                return None;
            };
            let kind = QKind::ALL.into_iter().find(|q| kind_name(*q) == *kind)?;
            let nums: Vec<usize> = sections
                .iter()
                .map(|s| s.parse().ok())
                .collect::<Option<_>>()?;
            let [q0, ql, s0, sl, m0, ml] = nums.as_slice() else {
                return None;
            };
            let parts = parts
                .split(',')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<usize>>>()?;
            let entry = Entry {
                kind,
                k: k.parse().ok()?,
                parts,
                sections: [(*q0, *ql), (*s0, *sl), (*m0, *ml)],
            };
            entries.insert((*key).to_string(), entry);
        }
        Some(Cache { map, entries })
    }

    /// The matrix cached under `key`, when it is `kind`, `k` wide, with these parts (what the
    /// GGUF's header says now).
    pub(crate) fn get(&self, key: &str, kind: QKind, k: usize, parts: &[usize]) -> Option<QRows> {
        let e = self.entries.get(key)?;
        if e.kind != kind || e.k != k || e.parts != parts {
            return None;
        }
        let [q, s, m] = e.sections;
        QRows::from_slabs(
            kind,
            k,
            parts,
            Slab::mapped(&self.map, q.0, q.1)?,
            Slab::mapped(&self.map, s.0, s.1)?,
            Slab::mapped(&self.map, m.0, m.1)?,
        )
    }

    /// Matrices in the cache.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Writes the cache of a GGUF matrix by matrix, as the load packs them (the matrices move into
/// the model right after): [`Writer::finish`] adds the index and renames the file into place;
/// a writer dropped unfinished, or any failed write, leaves no file (the next load packs from
/// the GGUF again).
pub(crate) struct Writer {
    w: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    pos: u64,
    index: String,
    failed: bool,
}

impl Writer {
    /// `None` where no cache can be written (no stamp, a read-only folder).
    pub(crate) fn create(gguf: &Path) -> Option<Writer> {
        let stamp = stamp(gguf)?;
        let target = cache_path(gguf);
        let tmp = super::temp_beside(&target);
        let file = std::fs::File::create(&tmp).ok()?;
        let mut w = Writer {
            w: std::io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            target,
            pos: 0,
            index: String::new(),
            failed: false,
        };
        w.put(MAGIC.as_bytes());
        w.put(stamp.as_bytes());
        Some(w)
    }

    fn put(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.failed = self.w.write_all(bytes).is_err();
            self.pos += bytes.len() as u64;
        }
    }

    /// Adds `m` under `key` (the names of the tensors it was packed from).
    pub(crate) fn add(&mut self, key: &str, m: &QRows) {
        assert!(!key.contains(['\t', '\n']), "cache key {key:?}");
        let mut sections = Vec::new();
        for (bytes, count) in m.slab_bytes() {
            let to = self.pos.next_multiple_of(ALIGN);
            self.put(&vec![0u8; (to - self.pos) as usize]);
            sections.push(format!("{}\t{count}", self.pos));
            self.put(bytes);
        }
        let parts: Vec<String> = m.parts().iter().map(usize::to_string).collect();
        self.index.push_str(&format!(
            "{key}\t{}\t{}\t{}\t{}\n",
            kind_name(m.kind()),
            m.cols(),
            parts.join(","),
            sections.join("\t")
        ));
    }

    /// Writes the index and the trailer, syncs, and renames the file into place.
    pub(crate) fn finish(mut self) {
        let (at, index) = (self.pos, std::mem::take(&mut self.index));
        self.put(index.as_bytes());
        self.put(&at.to_le_bytes());
        self.put(&(index.len() as u64).to_le_bytes());
        let synced = !self.failed && self.w.flush().is_ok() && self.w.get_ref().sync_data().is_ok();
        if synced && std::fs::rename(&self.tmp, &self.target).is_ok() {
            // renamed: nothing left for `drop` to remove
            self.tmp = PathBuf::new();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_rows(kind: QKind, parts: &[usize], k: usize, seed: u64) -> QRows {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = parts.iter().sum();
        let row = kind.row_bytes(k);
        let bytes: Vec<u8> = (0..n * row).map(|_| rng.random()).collect();
        let mut first_of = vec![0];
        for p in parts {
            first_of.push(first_of.last().unwrap() + p);
        }
        QRows::from_gguf(kind, parts, k, |p, first, buf| {
            let at = (first_of[p] + first) * row;
            buf.copy_from_slice(&bytes[at..at + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    fn same(a: &QRows, b: &QRows) -> bool {
        a.kind() == b.kind()
            && a.cols() == b.cols()
            && a.parts() == b.parts()
            && a.slab_bytes().map(|s| s.0) == b.slab_bytes().map(|s| s.0)
    }

    #[test]
    fn a_written_cache_maps_back_the_same_matrices_and_refuses_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"stand-in for a model file").unwrap();
        let mats = [
            ("emb".to_string(), random_rows(QKind::Q8_0, &[70], 64, 1)),
            (
                "qkv".to_string(),
                random_rows(QKind::Q5_0, &[33, 16, 5], 96, 2),
            ),
            ("up".to_string(), random_rows(QKind::Q4_1, &[40], 32, 3)),
            ("down".to_string(), random_rows(QKind::Q4K, &[20], 512, 4)),
            ("out".to_string(), random_rows(QKind::Q6K, &[17], 256, 5)),
        ];
        let mut w = Writer::create(&gguf).unwrap();
        for (key, m) in &mats {
            w.add(key, m);
        }
        w.finish();
        let cache = Cache::open(&gguf).expect("the cache just written");
        assert_eq!(cache.len(), 5);
        for (key, m) in &mats {
            let back = cache.get(key, m.kind(), m.cols(), m.parts()).unwrap();
            assert!(same(&back, m), "{key}");
            // the mapped matrix computes what the built one does
            let x: Vec<f32> = (0..2 * m.cols()).map(|i| (i as f32 * 0.37).sin()).collect();
            let xq = crate::engine::qrows::QuantInput::new(&x, m.cols());
            let bits = |out: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
                out.iter()
                    .map(|r| r.iter().map(|x| x.to_bits()).collect())
                    .collect()
            };
            assert_eq!(bits(back.matmul(&xq)), bits(m.matmul(&xq)), "{key}");
        }
        // what the header says now must match: kind, width, parts
        let (_, m) = &mats[0];
        assert!(cache.get("emb", QKind::Q5_0, 64, &[70]).is_none());
        assert!(cache.get("emb", m.kind(), 96, &[70]).is_none());
        assert!(cache.get("emb", m.kind(), 64, &[71]).is_none());
        assert!(cache.get("nope", m.kind(), 64, &[70]).is_none());
        drop(cache);

        // a cut file is ignored
        let path = cache_path(&gguf);
        let full = std::fs::read(&path).unwrap();
        for cut in [0, 10, 4096, full.len() / 2, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert!(Cache::open(&gguf).is_none(), "cut at {cut}");
        }
        std::fs::write(&path, &full).unwrap();
        assert!(Cache::open(&gguf).is_some());
        // a rewritten model file (new stamp) makes the cache stale
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&gguf, b"another model file of a different length").unwrap();
        assert!(Cache::open(&gguf).is_none());
        // a writer dropped unfinished (a load that failed) leaves nothing behind
        std::fs::remove_file(&path).unwrap();
        let mut w = Writer::create(&gguf).unwrap();
        w.add("emb", &mats[0].1);
        drop(w);
        assert!(!path.exists());
        // no temporary is left behind
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
