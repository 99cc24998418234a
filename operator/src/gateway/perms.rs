//! Permissions: what a user's token and `user_roles` row grant, and whether that covers what an
//! action needs.

/// Whether the granted permission `granted` covers `needed`: equal (case-insensitively), `*`,
/// or `<prefix>*` where `needed` starts with `<prefix>` (`task:*` covers `task:create`,
/// `*:read` is not a wildcard: only a trailing `*` is).
pub fn covers(granted: &str, needed: &str) -> bool {
    let granted = granted.trim();
    if granted == "*" || granted.eq_ignore_ascii_case(needed) {
        return true;
    }
    match granted.strip_suffix('*') {
        // A prefix must end at a separator, so `task*` does not cover `tasks:create`.
        Some(prefix) if prefix.ends_with(':') => needed
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        _ => false,
    }
}

/// Whether any of `grants` covers `needed`.
pub fn allows<S: AsRef<str>>(grants: &[S], needed: &str) -> bool {
    grants.iter().any(|g| covers(g.as_ref(), needed))
}

/// A user's row in `user_roles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRow {
    /// The role's name (for example `cogo_agent`).
    pub role: String,
    /// The permissions it grants.
    pub permissions: Vec<String>,
    /// The domain it holds in; none holds in every domain.
    pub domain: Option<String>,
    /// Whether the user is active; an inactive user may do nothing.
    pub is_active: bool,
}

/// Why a user may do nothing at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inactive;

/// What a user may do: the token's permissions, and those of their `user_roles` row when it
/// holds in the gateway's domain (`domain`, when the gateway has one). An inactive row takes
/// every permission away, the token's included.
pub fn grants(
    token: &[String],
    row: Option<&RoleRow>,
    domain: Option<&str>,
) -> Result<Vec<String>, Inactive> {
    let mut all = token.to_vec();
    if let Some(row) = row {
        if !row.is_active {
            return Err(Inactive);
        }
        let holds = match (domain, row.domain.as_deref()) {
            (Some(ours), Some(theirs)) => ours.eq_ignore_ascii_case(theirs),
            _ => true,
        };
        if holds {
            all.extend(row.permissions.iter().cloned());
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_what_they_name_and_nothing_else() {
        assert!(covers("task:*", "task:create"));
        assert!(covers("TASK:*", "task:read"));
        assert!(covers("*", "chat:send"));
        assert!(covers("chat:send", "chat:send"));
        assert!(!covers("task:*", "chat:send"));
        assert!(!covers("task:read", "task:create"));
        assert!(!covers("task*", "tasks:create"), "a prefix ends at a separator");
        assert!(
            !covers("*:read", "task:read"),
            "only a trailing star is a wildcard"
        );
        assert!(!covers("task:", "task:create"));
        assert!(!covers("", "task:create"));
        assert!(allows(&["agent:*", "chat:read"], "chat:read"));
        assert!(!allows::<&str>(&[], "chat:read"));
    }

    fn row(active: bool, domain: Option<&str>) -> RoleRow {
        RoleRow {
            role: "cogo_agent".into(),
            permissions: vec!["task:*".into()],
            domain: domain.map(Into::into),
            is_active: active,
        }
    }

    #[test]
    fn a_row_adds_to_the_token_in_its_domain_and_inactive_takes_all_away() {
        let token = vec!["chat:read".to_string()];
        let g = grants(&token, Some(&row(true, Some("cogo.xyz"))), Some("cogo.xyz")).unwrap();
        assert!(allows(&g, "task:create") && allows(&g, "chat:read"));
        let other = grants(&token, Some(&row(true, Some("other.xyz"))), Some("cogo.xyz")).unwrap();
        assert!(!allows(&other, "task:create") && allows(&other, "chat:read"));
        let anywhere = grants(&token, Some(&row(true, None)), Some("cogo.xyz")).unwrap();
        assert!(allows(&anywhere, "task:create"));
        let no_domain = grants(&token, Some(&row(true, Some("other.xyz"))), None).unwrap();
        assert!(allows(&no_domain, "task:create"));
        assert_eq!(grants(&token, Some(&row(false, None)), None), Err(Inactive));
        assert_eq!(grants(&token, None, None).unwrap(), token);
    }
}
