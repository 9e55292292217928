//! A package's files cut into 64 KiB chunks: each chunk's BLAKE3 hash and the whole file's,
//! in a [`Manifest`] the server signs with the action that carries it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Bytes per chunk (the last chunk of a file may be shorter; an empty file has none).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Most files in one package.
pub const MAX_FILES: usize = 64;

/// Most chunks in one package (64 GiB).
pub const MAX_CHUNKS: usize = 1 << 20;

/// Longest file name.
pub const MAX_NAME: usize = 255;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The BLAKE3 hash of `data`.
pub fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Lower-case hex of a hash (for people and file names).
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name in the work folder (no path).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    hash: ByteBuf,
    /// BLAKE3 of each chunk, 32 bytes each, in order.
    chunks: ByteBuf,
}

impl FileEntry {
    /// The whole file's hash.
    pub fn hash(&self) -> Hash {
        let mut h = [0u8; 32];
        if self.hash.len() == 32 {
            h.copy_from_slice(&self.hash);
        }
        h
    }

    /// How many chunks it has.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len() / 32
    }

    /// Chunk `i`'s hash.
    pub fn chunk_hash(&self, i: usize) -> Option<Hash> {
        let s = self.chunks.get(i * 32..i * 32 + 32)?;
        let mut h = [0u8; 32];
        h.copy_from_slice(s);
        Some(h)
    }
}

/// Where one chunk of a package lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// The file (index in the manifest).
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
    /// Its length.
    pub len: usize,
    /// Its hash.
    pub hash: Hash,
}

/// Why a manifest, a chunk or a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A file name that is empty, too long, a path, or `.`/`..`.
    #[error("file name {0:?} is not allowed (a plain name of at most 255 bytes)")]
    BadName(String),
    /// Two files with one name.
    #[error("two files are named {0:?}")]
    DuplicateName(String),
    /// Too many files or chunks.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Sizes and chunk lists disagree.
    #[error("file {0:?}: its size and chunk list disagree")]
    Inconsistent(String),
    /// A chunk whose bytes do not hash to what the manifest says.
    #[error("chunk {index} does not match its hash")]
    BadChunk {
        /// Its index in the package.
        index: u32,
    },
    /// A chunk index past the package's end.
    #[error("no chunk {0} in this package")]
    NoSuchChunk(u32),
    /// A whole file that does not hash to what the manifest says.
    #[error("file {0:?} does not match its hash")]
    BadFile(String),
}

/// A package's files and their chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The files, in order; chunks are numbered across them.
    pub files: Vec<FileEntry>,
}

/// A chunk whose bytes were checked against its hash: the only thing a cache stores or a
/// node serves.
#[derive(Debug, Clone)]
pub struct Verified {
    hash: Hash,
    data: Bytes,
}

impl Verified {
    /// Checks `data` against `expected`.
    pub fn check(expected: &Hash, data: Bytes) -> Option<Verified> {
        (hash(&data) == *expected).then_some(Verified {
            hash: *expected,
            data,
        })
    }

    /// Bytes read back from a store that checked them when they were written (a store
    /// only holds verified chunks, keyed by their hash).
    pub(crate) fn trusted(hash: Hash, data: Bytes) -> Verified {
        Verified { hash, data }
    }

    /// Its hash.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// Its bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

fn check_name(name: &str) -> Result<(), ManifestError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(ManifestError::BadName(name.to_string()));
    }
    Ok(())
}

impl Manifest {
    /// Cuts `files` (name, contents) into chunks and hashes them.
    pub fn build(files: &[(String, Bytes)]) -> Result<(Manifest, Vec<Verified>), ManifestError> {
        let mut entries = Vec::with_capacity(files.len());
        let mut chunks = Vec::new();
        for (name, data) in files {
            let mut hashes = Vec::with_capacity(data.len().div_ceil(CHUNK_SIZE) * 32);
            let mut at = 0;
            while at < data.len() {
                let end = (at + CHUNK_SIZE).min(data.len());
                let piece = data.slice(at..end);
                let h = hash(&piece);
                hashes.extend_from_slice(&h);
                chunks.push(Verified::trusted(h, piece));
                at = end;
            }
            entries.push(FileEntry {
                name: name.clone(),
                size: data.len() as u64,
                hash: ByteBuf::from(hash(data).to_vec()),
                chunks: ByteBuf::from(hashes),
            });
        }
        let m = Manifest { files: entries };
        m.check()?;
        Ok((m, chunks))
    }

    /// Checks what a decoded manifest says of itself: plain unique names, each file's chunk
    /// list as long as its size needs, and the limits.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooLarge(format!(
                "{} files (at most {MAX_FILES})",
                self.files.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        let mut total = 0usize;
        for f in &self.files {
            check_name(&f.name)?;
            if !names.insert(f.name.as_str()) {
                return Err(ManifestError::DuplicateName(f.name.clone()));
            }
            let need = usize::try_from(f.size.div_ceil(CHUNK_SIZE as u64))
                .map_err(|_| ManifestError::TooLarge(f.name.clone()))?;
            if f.hash.len() != 32 || f.chunks.len() % 32 != 0 || f.chunk_count() != need {
                return Err(ManifestError::Inconsistent(f.name.clone()));
            }
            total = total.saturating_add(need);
        }
        if total > MAX_CHUNKS {
            return Err(ManifestError::TooLarge(format!(
                "{total} chunks (at most {MAX_CHUNKS})"
            )));
        }
        Ok(())
    }

    /// Its id: the hash of its encoding.
    pub fn id(&self) -> Hash {
        hash(&rmp_serde::to_vec(self).unwrap_or_default())
    }

    /// Chunks across all files.
    pub fn chunk_count(&self) -> usize {
        self.files.iter().map(FileEntry::chunk_count).sum()
    }

    /// Bytes across all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Chunk `index` (numbered across the files).
    pub fn chunk(&self, index: u32) -> Option<ChunkRef> {
        let mut i = index as usize;
        for (file, f) in self.files.iter().enumerate() {
            let n = f.chunk_count();
            if i < n {
                let offset = (i * CHUNK_SIZE) as u64;
                let len = (f.size - offset).min(CHUNK_SIZE as u64) as usize;
                return Some(ChunkRef {
                    file,
                    offset,
                    len,
                    hash: f.chunk_hash(i)?,
                });
            }
            i -= n;
        }
        None
    }

    /// Every chunk's hash, in order.
    pub fn chunk_hashes(&self) -> Vec<Hash> {
        self.files
            .iter()
            .flat_map(|f| (0..f.chunk_count()).filter_map(|i| f.chunk_hash(i)))
            .collect()
    }

    /// Checks chunk `index`'s bytes.
    pub fn verify(&self, index: u32, data: Bytes) -> Result<Verified, ManifestError> {
        let c = self.chunk(index).ok_or(ManifestError::NoSuchChunk(index))?;
        if data.len() != c.len {
            return Err(ManifestError::BadChunk { index });
        }
        Verified::check(&c.hash, data).ok_or(ManifestError::BadChunk { index })
    }
}
