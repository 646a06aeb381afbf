//! [`FileRange`]: where a member (a layer, a config) lives inside a source
//! file, and how to read it. Knows nothing of what the bytes are.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A byte range of a file: where a layer or config lives inside a tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRange {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl FileRange {
    /// Open the file positioned at the range, limited to its length.
    pub fn open(&self) -> io::Result<io::Take<File>> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        Ok(file.take(self.len))
    }

    /// Read the whole range; only for small members (configs, manifest.json).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut buf)?;
        if buf.len() as u64 != self.len {
            return Err(truncated(&self.path));
        }
        Ok(buf)
    }
}

/// The error for a range that `path` ends inside of.
pub(super) fn truncated(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "{} ends before the member's data: the file is truncated",
            path.display()
        ),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `bytes` as the range of a member of the file `dir/name`.
    pub(in crate::blob) fn range_of(bytes: &[u8], dir: &Path, name: &str) -> FileRange {
        // Surround the member with other bytes, as inside a tarball.
        let path = dir.join(name);
        let mut data = b"HEADER--".to_vec();
        data.extend_from_slice(bytes);
        data.extend_from_slice(b"--TRAILER");
        std::fs::write(&path, data).unwrap();
        FileRange {
            path,
            offset: 8,
            len: bytes.len() as u64,
        }
    }
}
