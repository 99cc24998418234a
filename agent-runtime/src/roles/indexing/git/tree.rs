//! Writing the fetched commit's tree to disk, with every limit enforced while the files are
//! written: symlinks and submodules are skipped, and names that could escape are refused.

use std::io::Write as _;
use std::path::Path;

use gix::bstr::ByteSlice as _;
use gix::objs::FindExt as _;
use gix::objs::tree::EntryKind;

use super::{GitError, Limits, guard::Guard, transport_error};

/// Writes a tree to disk depth-first, one blob in memory at a time, counting against the limits.
pub(super) struct TreeWriter<'a> {
    repo: &'a gix::Repository,
    limits: &'a Limits,
    guard: &'a Guard,
    url: &'a str,
    /// Files written so far.
    pub(super) files: u64,
    /// Bytes written so far.
    pub(super) bytes: u64,
    /// Files skipped for being over [`Limits::max_file_bytes`].
    pub(super) skipped_large: u64,
    buf: Vec<u8>,
}

impl<'a> TreeWriter<'a> {
    /// A writer reading objects from `repo`; `url` (redacted) is for messages.
    pub(super) fn new(repo: &'a gix::Repository, limits: &'a Limits, guard: &'a Guard, url: &'a str) -> Self {
        TreeWriter {
            repo,
            limits,
            guard,
            url,
            files: 0,
            bytes: 0,
            skipped_large: 0,
            buf: Vec::new(),
        }
    }

    /// Writes the tree `root` into `dir`, depth-first.
    pub(super) fn write(&mut self, root: gix::ObjectId, dir: &Path) -> Result<(), GitError> {
        let mut stack = vec![(root, dir.to_owned())];
        while let Some((tree_id, dir)) = stack.pop() {
            std::fs::create_dir_all(&dir).map_err(|source| GitError::Io {
                path: dir.clone(),
                source,
            })?;
            let tree = self
                .repo
                .find_tree(tree_id)
                .map_err(|e| transport_error(self.url, &e))?;
            let entries: Vec<_> = tree
                .iter()
                .map(|entry| entry.map(|e| (e.mode().kind(), e.filename().to_owned(), e.oid().to_owned())))
                .collect::<Result<_, _>>()
                .map_err(|e| transport_error(self.url, &e))?;
            for (kind, name, oid) in entries {
                if self.guard.interrupted() {
                    return Err(GitError::Timeout {
                        url: self.url.to_owned(),
                        limit: self.limits.timeout,
                    });
                }
                let path = dir.join(safe_name(name.as_bstr()).ok_or_else(|| GitError::UnsafePath {
                    url: self.url.to_owned(),
                    path: name.to_string(),
                })?);
                match kind {
                    EntryKind::Tree => stack.push((oid, path)),
                    EntryKind::Blob | EntryKind::BlobExecutable => self.write_blob(oid, &path)?,
                    // Symlinks could point outside the tree; submodules are other repositories.
                    EntryKind::Link | EntryKind::Commit => {}
                }
            }
        }
        Ok(())
    }

    /// Writes one file, or skips it if it is too big; fails past the total limits.
    fn write_blob(&mut self, oid: gix::ObjectId, path: &Path) -> Result<(), GitError> {
        let size = self
            .repo
            .find_header(oid)
            .map_err(|e| transport_error(self.url, &e))?
            .size();
        if size > self.limits.max_file_bytes {
            self.skipped_large += 1;
            return Ok(());
        }
        if self.files + 1 > self.limits.max_files {
            return Err(GitError::TooManyFiles {
                limit: self.limits.max_files,
            });
        }
        if self.bytes + size > self.limits.max_bytes {
            return Err(GitError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        let blob = self
            .repo
            .objects
            .find_blob(&oid, &mut self.buf)
            .map_err(|e| transport_error(self.url, &e))?;
        let io = |source| GitError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::create_new(path).map_err(io)?;
        file.write_all(blob.data).map_err(io)?;
        self.files += 1;
        self.bytes += size;
        Ok(())
    }
}

/// The file name to write for a tree entry, or `None` if it could escape the working tree or
/// land in a `.git` directory.
pub(super) fn safe_name(name: &gix::bstr::BStr) -> Option<&str> {
    let name = std::str::from_utf8(name).ok()?;
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.eq_ignore_ascii_case(".git")
        || name.contains(['/', '\\', '\0']);
    (!bad).then_some(name)
}
