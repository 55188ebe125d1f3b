//! systemd unit names, as systemd.unit(5) defines them, minus what would be
//! dangerous on a command line: `name[@instance][.type]`, at most 255
//! characters of ASCII letters, digits, `:`, `-`, `_`, `.` and one `@`.
//!
//! Left out on purpose: `\` escapes (`systemd-escape` output; a shell
//! metacharacter), glob characters (`systemctl restart 'web*'` restarts
//! every match), and a leading `-`, which systemctl would read as an option
//! (so the root slice `-.slice` and mount `-.mount` cannot be named).

/// The longest unit name systemd accepts (`UNIT_NAME_MAX` less the NUL).
const MAX_LEN: usize = 255;

/// The unit types systemd knows, for names that carry one.
const TYPES: [&str; 11] =
    ["service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope"];

/// Why `unit` is not a unit name this plugin will pass on, if it is not.
pub(crate) fn check(unit: &str) -> Result<(), String> {
    if unit.is_empty() || unit.len() > MAX_LEN {
        return Err(format!("must be 1 to {MAX_LEN} characters long"));
    }
    if unit.starts_with('-') {
        return Err("must not start with '-' (systemctl would read it as an option)".into());
    }
    if let Some(bad) = unit.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@'))) {
        return Err(format!(
            "{bad:?} is not allowed in a unit name (letters, digits, : - _ . and one @ only; no shell or glob characters)"
        ));
    }
    let (stem, kind) = match unit.rsplit_once('.') {
        Some((stem, kind)) if TYPES.contains(&kind) => (stem, Some(kind)),
        _ => (unit, None),
    };
    if stem.is_empty() {
        return Err("needs a name before its type".into());
    }
    if let Some((prefix, instance)) = stem.split_once('@') {
        if prefix.is_empty() || instance.contains('@') {
            return Err("a template instance is prefix@instance, with one @".into());
        }
        if instance.is_empty() {
            return Err(format!("{stem}@ is a template: name an instance ({prefix}@something)"));
        }
        if kind.is_some_and(|k| k != "service" && k != "socket" && k != "timer" && k != "path" && k != "target") {
            return Err("only services, sockets, timers, paths and targets have instances".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_units_pass() {
        for unit in ["nginx", "nginx.service", "getty@tty1.service", "sys-kernel.mount", "a:b_c-d.e", "web.target"] {
            assert_eq!(check(unit), Ok(()), "{unit}");
        }
    }

    #[test]
    fn shell_and_glob_characters_and_options_are_refused() {
        for unit in ["nginx;reboot", "a b", "$(id)", "`id`", "web*", "a?b", "[ab]", "a|b", "a&b", "a>b", "x\\x2dy", "é"]
        {
            let err = check(unit).unwrap_err();
            assert!(err.contains("is not allowed"), "{unit}: {err}");
        }
        assert!(check("--root=/").unwrap_err().contains("option"));
        assert!(check("-.slice").unwrap_err().contains("option"));
    }

    #[test]
    fn templates_need_an_instance_and_names_have_bounds() {
        assert!(check("getty@.service").unwrap_err().contains("name an instance"));
        assert!(check("@x.service").is_err());
        assert!(check("a@b@c.service").is_err());
        assert!(check(".service").unwrap_err().contains("needs a name"));
        assert!(check("").is_err());
        assert!(check(&"a".repeat(256)).is_err());
        assert!(check(&"a".repeat(255)).is_ok());
    }
}
