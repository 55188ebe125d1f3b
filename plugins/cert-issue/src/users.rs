//! The rules for user names. A name becomes a certificate's CN and the stem
//! of two file names, so it must be safe as both: no path separators, no
//! leading dot (hidden files, `..`), nothing a shell or an RFC 4514 string
//! would treat specially, and at most 64 characters (X.509's upper bound
//! for a CN). Two names that differ only in case would write the same files
//! on a case-insensitive filesystem, so they count as duplicates.

use std::collections::HashMap;

use opal_sdk::FieldError;

/// The longest user name: `ub-common-name` in RFC 5280.
const MAX_LEN: usize = 64;

/// Every problem with `users`, each naming its entry (`users/2`).
pub(crate) fn check(users: &[String]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if users.is_empty() {
        errors.push(FieldError::new("users", "at least one user is needed"));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let field = format!("users/{i}");
        if let Err(why) = check_name(user) {
            errors.push(FieldError::new(field, format!("{user:?} {why}")));
        } else if let Some(first) = seen.insert(user.to_lowercase(), i) {
            errors.push(FieldError::new(field, format!("{user:?} is a duplicate of users/{first}")));
            seen.insert(user.to_lowercase(), first);
        }
    }
    errors
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(format!("must be 1 to {MAX_LEN} characters long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit".into());
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))) {
        Some(bad) => Err(format!("cannot be a file name: {bad:?} is not allowed (letters, digits, . _ @ - only)")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(users: &[&str]) -> Vec<(String, String)> {
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        check(&users).into_iter().map(|e| (e.field, e.message)).collect()
    }

    #[test]
    fn ordinary_names_pass() {
        assert!(fields(&["alice", "bob.smith", "carol_2", "dave@example.org", "E-5"]).is_empty());
    }

    #[test]
    fn names_unsafe_as_files_are_refused_by_index() {
        let errors = fields(&["ok", "../etc/passwd", ".hidden", "a b", "x/y", "-rf", "é", ""]);
        let names: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["users/1", "users/2", "users/3", "users/4", "users/5", "users/6", "users/7"]);
        assert!(errors[2].1.contains("' ' is not allowed"), "{errors:?}");
        assert!(errors[0].1.contains("must start with a letter or a digit"), "{errors:?}");
        assert!(errors[6].1.contains("1 to 64"), "{errors:?}");
        assert!(!fields(&[&"a".repeat(65)]).is_empty());
        assert!(fields(&[&"a".repeat(64)]).is_empty());
    }

    #[test]
    fn duplicates_ignore_case_and_name_the_first() {
        assert_eq!(
            fields(&["bob", "alice", "Bob", "bob"]),
            [
                ("users/2".to_owned(), "\"Bob\" is a duplicate of users/0".to_owned()),
                ("users/3".to_owned(), "\"bob\" is a duplicate of users/0".to_owned()),
            ]
        );
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert_eq!(fields(&[]), [("users".to_owned(), "at least one user is needed".to_owned())]);
    }
}
