//! Unit tests of the URL checks, redaction, tree entry names and limit messages.

use super::{tree::safe_name, *};

#[test]
fn only_https_http_and_git_urls_are_fetched() {
    let limits = Limits::default();
    for url in [
        "https://example.com/a/b",
        "http://example.com/a.git",
        "git://example.com/a",
    ] {
        assert!(check_scheme(url, url, &limits).is_ok(), "{url}");
    }
    for (url, scheme) in [
        ("ssh://git@example.com/a", "ssh"),
        ("git@example.com:a/b.git", "ssh"),
        ("file:///tmp/repo", "file"),
        ("/tmp/repo", "file"),
    ] {
        let err = check_scheme(url, url, &limits).unwrap_err();
        assert!(
            matches!(&err, GitError::UnsupportedScheme { scheme: s, .. } if s == scheme),
            "{url}: {err}"
        );
    }
    let files = Limits {
        allow_file: true,
        ..Limits::default()
    };
    assert!(check_scheme("file:///tmp/repo", "file:///tmp/repo", &files).is_ok());
}

#[test]
fn credentials_never_appear_in_messages() {
    assert_eq!(
        redact("https://user:tok@github.com/a/b"),
        "https://github.com/a/b"
    );
    assert_eq!(redact("https://github.com/a/b@c"), "https://github.com/a/b@c");
    assert_eq!(redact("git://host/x"), "git://host/x");
}

#[test]
fn names_that_could_escape_the_tree_are_refused() {
    for bad in ["", ".", "..", ".git", ".GIT", "a/b", "a\\b", "a\0"] {
        assert_eq!(safe_name(bad.into()), None, "{bad:?}");
    }
    assert_eq!(safe_name("src".into()), Some("src"));
    assert_eq!(safe_name(".github".into()), Some(".github"));
}

#[test]
fn limits_read_in_messages() {
    assert_eq!(
        GitError::TooLarge { limit: 200 * MIB }.to_string(),
        "repository is larger than the 200 MiB limit"
    );
    assert_eq!(human_bytes(12_900_000), "12.3 MiB");
}
