//! What the Indexing benchmark indexes: the test tree (`tests/data/index`) as inline files, and
//! a large repository generated from it by copying each source file with every name it defines
//! suffixed by the copy number, so definitions stay unique and the mix of languages stays the
//! same.

use std::{collections::HashSet, path::Path};

use cogo_agent::roles::indexing::parse::{self, Language};

/// One inline file of `index.repository`.
pub struct SourceFile {
    /// Relative, `/`-separated.
    pub path: String,
    /// Its text.
    pub content: String,
}

impl SourceFile {
    /// Whether `index.repository` parses it (one of the five languages).
    pub fn is_source(&self) -> bool {
        Language::of_path(&self.path).is_some()
    }

    /// Its lines, counted as the indexer counts them.
    pub fn lines(&self) -> usize {
        self.content.lines().count()
    }
}

/// Every text file under `root`, sorted by path.
pub fn read_tree(root: &Path) -> std::io::Result<Vec<SourceFile>> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(content) = std::fs::read_to_string(&path) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(SourceFile {
                    path: rel.to_string_lossy().replace('\\', "/"),
                    content,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Copies of the source files of `tree`, `copies` of each, under `copyNNN/`. Copy `k` has every
/// name its file defines suffixed with `_c{k}`; two copies in five also carry a second
/// rendition of the file (suffix `_c{k}b`, without Go's `package` line) after the first, which
/// brings the test tree's 145 lines per file to about 200.
pub fn generate(tree: &[SourceFile], copies: usize) -> Vec<SourceFile> {
    let sources: Vec<(&SourceFile, HashSet<String>)> =
        tree.iter().filter_map(|f| Some((f, defined_names(f)?))).collect();
    let mut out = Vec::with_capacity(sources.len() * copies);
    for k in 0..copies {
        for (file, names) in &sources {
            let mut content = rename(&file.content, names, &format!("_c{k}"));
            if k % 5 < 2 {
                let second = rename(&file.content, names, &format!("_c{k}b"));
                content.push('\n');
                for line in second.lines().filter(|l| !l.starts_with("package ")) {
                    content.push_str(line);
                    content.push('\n');
                }
            }
            out.push(SourceFile {
                path: format!("copy{k:03}/{}", file.path),
                content,
            });
        }
    }
    out
}

/// The names `file` defines, or None when it is not source code.
fn defined_names(file: &SourceFile) -> Option<HashSet<String>> {
    let language = Language::of_path(&file.path)?;
    let parsed = parse::parse(language, &file.content).ok()?;
    Some(parsed.symbols.into_iter().map(|s| s.name).collect())
}

/// `text` with every identifier in `names` followed by `suffix` (whole identifiers only, so
/// `parse` is renamed and `parser` is not).
fn rename(text: &str, names: &HashSet<String>, suffix: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(start) = rest.find(is_ident) {
        out.push_str(&rest[..start]);
        let token_len = rest[start..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        out.push_str(token);
        if names.contains(token) && !token.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(suffix);
        }
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_defined_names_are_renamed() {
        let names: HashSet<String> = ["parse", "Server"].map(String::from).into();
        let text = "fn parse(s: &str) -> Server { parser(s); Server::new(parse_x) }";
        assert_eq!(
            rename(text, &names, "_c7"),
            "fn parse_c7(s: &str) -> Server_c7 { parser(s); Server_c7::new(parse_x) }"
        );
    }

    #[test]
    fn copies_define_unique_names() {
        let tree = [SourceFile {
            path: "a/lib.go".into(),
            content: "package a\n\nfunc Parse() int { return helper() }\n\nfunc helper() int { return 1 }\n"
                .into(),
        }];
        let out = generate(&tree, 3);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].path, "copy002/a/lib.go");
        assert!(
            out[1]
                .content
                .contains("func Parse_c1() int { return helper_c1() }")
        );
        assert!(out[1].content.contains("func Parse_c1b()"), "{}", out[1].content);
        assert_eq!(out[1].content.matches("package a").count(), 1);
        assert!(!out[2].content.contains("_c2b"));
    }
}
