//! [`Scope`]: the targets a principal may see, as a list of glob patterns.
//!
//! The matcher is ours, not a glob crate's, because targets are not paths on
//! a disk: they are opaque names such as `site-a/web-1` that operators group
//! with `/`. The rules are small and written down in docs/operations.md:
//! `*` matches any run of characters except `/`, `**` matches any run of
//! characters including `/`, `?` matches one character except `/`, and every
//! other character matches itself. Matching is a dynamic program over
//! (pattern token, target character): linear in their product, never
//! exponential, whatever the pattern.

use std::fmt;
use std::sync::Arc;

/// Longest accepted pattern, in bytes (targets themselves are at most 256).
const MAX_PATTERN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    Stars,
}

/// One compiled target pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetGlob {
    text: String,
    tokens: Vec<Token>,
}

impl fmt::Debug for TargetGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl TargetGlob {
    /// Compiles `pattern`; refuses empty, over-long and control-character patterns.
    pub fn new(pattern: &str) -> Result<TargetGlob, String> {
        if pattern.is_empty() || pattern.len() > MAX_PATTERN {
            return Err(format!("target pattern {pattern:?} must be 1 to {MAX_PATTERN} bytes"));
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!("target pattern {pattern:?} must not contain control characters"));
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if chars.peek() == Some(&'*') => {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    Token::Stars
                }
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(c),
            });
        }
        Ok(TargetGlob { text: pattern.to_owned(), tokens })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `target` matches the whole pattern.
    pub fn matches(&self, target: &str) -> bool {
        let text: Vec<char> = target.chars().collect();
        // `rest[j]`: the tokens from `i` on match `text[j..]`; computed from
        // the last token back to the first.
        let mut rest = vec![false; text.len() + 1];
        rest[text.len()] = true;
        for token in self.tokens.iter().rev() {
            let mut here = vec![false; text.len() + 1];
            for j in (0..=text.len()).rev() {
                here[j] = match token {
                    Token::Char(c) => j < text.len() && text[j] == *c && rest[j + 1],
                    Token::One => j < text.len() && text[j] != '/' && rest[j + 1],
                    Token::Star => rest[j] || (j < text.len() && text[j] != '/' && here[j + 1]),
                    Token::Stars => rest[j] || (j < text.len() && here[j + 1]),
                };
            }
            rest = here;
        }
        rest[0]
    }
}

/// Which targets a principal may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every target (admins, and everyone in dev mode).
    All,
    /// Targets matching at least one of these patterns. Shared: every
    /// connection of a principal holds the same list.
    Targets(Arc<[TargetGlob]>),
}

impl Scope {
    /// A scope from patterns as written in the config or a JWT's `targets`.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Scope, String> {
        let globs = patterns.iter().map(|p| TargetGlob::new(p.as_ref())).collect::<Result<Vec<_>, _>>()?;
        Ok(Scope::Targets(globs.into()))
    }

    /// Whether `target` is inside the scope.
    pub fn allows(&self, target: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Targets(globs) => globs.iter().any(|g| g.matches(target)),
        }
    }

    /// True for [`Scope::All`]: nothing needs filtering.
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let cases = [
            ("site-a/*", "site-a/x", true),
            ("site-a/*", "site-a/", true),
            ("site-a/*", "site-a/x/y", false),
            ("site-a/*", "site-b/x", false),
            ("site-a/*", "site-a", false),
            ("site-a/**", "site-a/x/y", true),
            ("**", "anything/at/all", true),
            ("*", "srv-1", true),
            ("*", "a/b", false),
            ("srv-?", "srv-1", true),
            ("srv-?", "srv-10", false),
            ("srv-1", "srv-1", true),
            ("srv-1", "srv-12", false),
            ("*-prod", "db-prod", true),
            ("é*", "été", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ];
        for (pattern, target, expected) in cases {
            assert_eq!(TargetGlob::new(pattern).unwrap().matches(target), expected, "{pattern} ~ {target}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(TargetGlob::new("").is_err());
        assert!(TargetGlob::new("a\nb").is_err());
        assert!(TargetGlob::new(&"x".repeat(300)).is_err());
    }

    #[test]
    fn a_pathological_pattern_stays_linear() {
        let glob = TargetGlob::new(&"*a".repeat(60)).unwrap();
        assert!(!glob.matches(&"a".repeat(59)));
        assert!(glob.matches(&"a".repeat(200)));
    }

    #[test]
    fn scopes_allow_any_matching_pattern() {
        let scope = Scope::from_patterns(&["site-a/*", "lab"]).unwrap();
        assert!(scope.allows("site-a/x") && scope.allows("lab") && !scope.allows("site-b/x"));
        assert!(Scope::All.allows("site-b/x"));
        assert!(Scope::from_patterns(&[""]).is_err());
    }
}
