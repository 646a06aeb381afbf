//! One pass over a tarball's headers, seeking over member data, so that any
//! member can later be streamed from its offset without scanning again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::blob::FileRange;

/// Where each regular file of a tarball lives, by its normalised path.
#[derive(Debug)]
pub struct TarIndex {
    pub path: PathBuf,
    members: HashMap<String, FileRange>,
}

/// Member names are compared without a leading `./` (docker save writes
/// none, some tools write one).
pub fn normalise_member(name: &str) -> &str {
    name.trim_start_matches("./")
}

/// Every tar writer Bazel's tools use (Go's archive/tar, GNU tar, docker)
/// marks its headers `ustar` at offset 257: check before parsing, so that
/// an HTML error page or a gzip file gets a plain answer.
fn check_tar_magic(path: &Path, file: &File) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 512];
    let n = file
        .read_at(&mut header, 0)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if n < 512 || &header[257..262] != b"ustar" {
        let what = if header.starts_with(&[0x1f, 0x8b]) {
            " (it is gzip-compressed)"
        } else {
            ""
        };
        return Err(format!(
            "{} is not a tar archive{what}; rebuild it with bazel",
            path.display()
        ));
    }
    Ok(())
}

impl TarIndex {
    /// Read every header of `path` (data is seeked over, never read).
    pub fn build(path: &Path) -> Result<TarIndex, String> {
        // Check the kind first: opening a FIFO would block forever.
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            let kind = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a FIFO, socket or device)"
            };
            return Err(format!(
                "{} is {kind}, not an image tarball; remove it and rebuild with bazel",
                path.display()
            ));
        }
        let file = File::open(path).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                ": give kvpush read access to it (or rebuild it with bazel)"
            } else {
                ""
            };
            format!("cannot open {}: {e}{hint}", path.display())
        })?;
        let file_len = meta.len();
        if file_len == 0 {
            return Err(format!(
                "{} is empty: rebuild it with bazel",
                path.display()
            ));
        }
        check_tar_magic(path, &file)?;
        let mut archive = tar::Archive::new(BufReader::with_capacity(64 * 1024, file));
        let not_tar =
            |e: io::Error| format!("{} is not a readable tar archive: {e}", path.display());
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let entry = entry.map_err(not_tar)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(not_tar)?
                .to_string_lossy()
                .into_owned();
            let range = FileRange {
                path: path.to_path_buf(),
                offset: entry.raw_file_position(),
                len: entry.size(),
            };
            let end = range.offset.saturating_add(range.len);
            if end > file_len {
                return Err(format!(
                    "{} is truncated: member {name} needs {} bytes past the end of the file; rebuild it with bazel",
                    path.display(),
                    end - file_len
                ));
            }
            // A rules_docker bundle may hold the same config twice; both
            // copies are identical, the last one wins.
            members.insert(normalise_member(&name).to_string(), range);
        }
        if members.is_empty() {
            return Err(format!(
                "{} is not a tar archive (no members found)",
                path.display()
            ));
        }
        Ok(TarIndex {
            path: path.to_path_buf(),
            members,
        })
    }

    pub fn get(&self, name: &str) -> Option<&FileRange> {
        self.members.get(normalise_member(name))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tar(path: &Path, members: &[(&str, &[u8])]) {
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.finish().unwrap();
    }

    #[test]
    fn indexes_members_and_reads_them_from_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let long_name = format!("{}/layer.tar", "d".repeat(150));
        write_tar(
            &path,
            &[
                ("abc.json", b"{\"x\":1}"),
                (&long_name, &[7u8; 5000]),
                ("./manifest.json", b"[]"),
            ],
        );
        let index = TarIndex::build(&path).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.get("abc.json").unwrap().read_all().unwrap(),
            b"{\"x\":1}"
        );
        assert_eq!(
            index.get(&long_name).unwrap().read_all().unwrap(),
            vec![7u8; 5000]
        );
        assert_eq!(
            index.get("manifest.json").unwrap().read_all().unwrap(),
            b"[]"
        );
    }

    #[test]
    fn truncated_empty_and_non_tar_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        write_tar(&path, &[("big", &[1u8; 100_000]), ("manifest.json", b"[]")]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..50_000]).unwrap();
        let err = TarIndex::build(&path).unwrap_err();
        assert!(err.contains("truncated") && err.contains("t.tar"), "{err}");

        std::fs::write(&path, b"").unwrap();
        assert!(TarIndex::build(&path).unwrap_err().contains("empty"));

        std::fs::write(
            &path,
            b"this is not a tar archive at all, just some text\n".repeat(20),
        )
        .unwrap();
        let err = TarIndex::build(&path).unwrap_err();
        assert!(err.contains("not a") && err.contains("t.tar"), "{err}");

        let err = TarIndex::build(dir.path()).unwrap_err();
        assert!(
            err.contains("is a directory, not an image tarball"),
            "{err}"
        );
    }
}
