//! A job's directory on the worker: the workspace the program sees as `/work` (its input files
//! first), the program itself beside it, and the packages it asked for. What the program leaves
//! in the workspace comes back as output files. The directory is removed when the job ends.

use std::{
    collections::HashMap,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Component, Path, PathBuf},
};

use base64::Engine;
use cogo_api::catalogue::{
    Encoding,
    python::{InputFile, OutputFile},
};
use sha2::{Digest, Sha256};

/// Output files returned, at most.
pub const MAX_OUTPUT_FILES: usize = 100;
/// The largest file whose content is returned.
pub const MAX_FILE_CONTENT: u64 = 256 * 1024;
/// Content returned for all files together, at most.
pub const MAX_TOTAL_CONTENT: usize = 1024 * 1024;
/// Input files a job may give.
pub const MAX_INPUT_FILES: usize = 100;

/// One job's directory.
pub struct Workspace {
    root: PathBuf,
    owner: Option<u32>,
}

fn chown(path: &Path, owner: Option<u32>) -> std::io::Result<()> {
    if let Some(id) = owner {
        std::os::unix::fs::chown(path, Some(id), Some(id))?;
    }
    Ok(())
}

/// Checks a workspace-relative path: relative, plain components, no `..`, of sane length.
pub fn check_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let plain = p.components().all(|c| matches!(c, Component::Normal(_)));
    if path.is_empty() || path.len() > 1024 || !plain || p.components().any(|c| c.as_os_str().len() > 255) {
        return Err(format!(
            "file path {path:?} must be relative to the workspace, without `..`, at most 1024 characters"
        ));
    }
    Ok(p.to_path_buf())
}

/// The bytes of an input file.
pub fn decode(file: &InputFile) -> Result<Vec<u8>, String> {
    match file.encoding.unwrap_or_default() {
        Encoding::Utf8 => Ok(file.content.clone().into_bytes()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(file.content.as_bytes())
            .map_err(|e| format!("file {:?} is not valid base64: {e}", file.path)),
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Workspace {
    /// Creates `<jobs>/<id>/work`, owned by `owner` (when the worker runs as root).
    pub fn create(jobs: &Path, id: &str, owner: Option<u32>) -> std::io::Result<Self> {
        std::fs::create_dir_all(jobs)?;
        let root = jobs.join(id);
        std::fs::create_dir(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        chown(&root, owner)?;
        let ws = Workspace { root, owner };
        ws.dir("work")?;
        Ok(ws)
    }

    /// Takes charge of an existing job directory (to remove it).
    pub fn adopt(root: PathBuf, owner: Option<u32>) -> Self {
        Workspace { root, owner }
    }

    /// Creates a directory of the job, for the sandbox to write.
    pub fn dir(&self, name: &str) -> std::io::Result<PathBuf> {
        let d = self.root.join(name);
        std::fs::create_dir_all(&d)?;
        chown(&d, self.owner)?;
        Ok(d)
    }

    /// The workspace (`/work` in the sandbox).
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Writes a file of the job beside the workspace (the program), readable by the sandbox.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let p = self.root.join(name);
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))?;
        Ok(p)
    }

    /// Writes the input files into the workspace; returns each path's digest.
    pub fn write_inputs(&self, files: &[(PathBuf, Vec<u8>)]) -> std::io::Result<HashMap<PathBuf, [u8; 32]>> {
        let work = self.work();
        let mut digests = HashMap::new();
        for (rel, bytes) in files {
            let path = work.join(rel);
            if let Some(parent) = path.parent() {
                let mut dir = work.clone();
                for c in parent.strip_prefix(&work).unwrap_or(Path::new("")).components() {
                    dir.push(c);
                    if !dir.exists() {
                        std::fs::create_dir(&dir)?;
                        chown(&dir, self.owner)?;
                    }
                }
            }
            std::fs::write(&path, bytes)?;
            chown(&path, self.owner)?;
            digests.insert(rel.clone(), digest(bytes));
        }
        Ok(digests)
    }

    /// The files the program created or changed in the workspace (regular files only; links
    /// are not followed), with their content while within the limits.
    pub fn outputs(&self, inputs: &HashMap<PathBuf, [u8; 32]>) -> Vec<OutputFile> {
        let work = self.work();
        let mut found = Vec::new();
        let mut stack = vec![work.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(e.path());
                } else if meta.is_file() {
                    found.push((e.path(), meta));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        let mut budget = MAX_TOTAL_CONTENT;
        for (path, meta) in found {
            if out.len() == MAX_OUTPUT_FILES {
                break;
            }
            let Ok(rel) = path.strip_prefix(&work) else {
                continue;
            };
            let small = meta.len() <= MAX_FILE_CONTENT && meta.nlink() == 1;
            let bytes = small.then(|| std::fs::read(&path).ok()).flatten();
            if let Some(b) = &bytes
                && inputs.get(rel) == Some(&digest(b))
            {
                continue;
            }
            let (content, encoding) = match bytes.map(|b| match String::from_utf8(b) {
                Ok(text) => (text, Encoding::Utf8),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    Encoding::Base64,
                ),
            }) {
                Some((c, enc)) if c.len() <= budget => {
                    budget -= c.len();
                    (Some(c), Some(enc))
                }
                _ => (None, None),
            };
            out.push(OutputFile {
                path: rel.display().to_string(),
                size: meta.len(),
                content,
                encoding,
            });
        }
        out
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // A job may have taken the write bit off its directories: give it back, then remove.
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_paths_stay_in_the_workspace() {
        for ok in ["a.txt", "data/in.csv", "x/y/z"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a", &"x".repeat(300)] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_are_new_or_changed_files_with_their_content() {
        let jobs = std::env::temp_dir().join(format!("cogo-ws-test-{}", std::process::id()));
        let ws = Workspace::create(&jobs, "j1", None).unwrap();
        let inputs = ws
            .write_inputs(&[
                (PathBuf::from("same.txt"), b"same".to_vec()),
                (PathBuf::from("dir/changed.txt"), b"old".to_vec()),
            ])
            .unwrap();
        std::fs::write(ws.work().join("dir/changed.txt"), "new").unwrap();
        std::fs::write(ws.work().join("bin.dat"), [0xff, 0x00, 0x01]).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", ws.work().join("link")).unwrap();
        let out = ws.outputs(&inputs);
        let paths: Vec<&str> = out.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["bin.dat", "dir/changed.txt"],
            "unchanged inputs and links are left out"
        );
        assert_eq!(out[0].encoding, Some(Encoding::Base64));
        assert_eq!(out[0].content.as_deref(), Some("/wAB"));
        assert_eq!((out[1].content.as_deref(), out[1].size), (Some("new"), 3));
        let root = jobs.join("j1");
        drop(ws);
        assert!(!root.exists(), "removed with the job");
        let _ = std::fs::remove_dir_all(jobs);
    }
}
