//! Which components speak our `opal:plugin` package, read from their imports
//! before anything is linked, so an incompatible plugin is refused with both
//! versions named rather than with a linker error.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The `opal:plugin` package version this host implements (`wit/plugin.wit`).
pub const WIT_VERSION: semver::Version = semver::Version::new(0, 1, 2);

/// The WASI and `opal:plugin` interfaces a component imports, by name.
pub(super) fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

/// The `opal:plugin` version a component was built against, if it imports
/// any of the package's interfaces.
pub(super) fn plugin_wit_version(imports: &[String]) -> Result<Option<semver::Version>, String> {
    let mut found: Option<semver::Version> = None;
    for name in imports.iter().filter(|n| n.starts_with("opal:plugin/")) {
        let Some((_, version)) = name.split_once('@') else {
            return Err(format!("it imports {name} without a package version"));
        };
        let version = semver::Version::parse(version).map_err(|e| format!("it imports {name}: {e}"))?;
        if found.as_ref().is_some_and(|v| *v != version) {
            return Err(format!("it imports two versions of opal:plugin ({} and {version})", found.unwrap()));
        }
        found = Some(version);
    }
    Ok(found)
}

/// Whether a plugin built against `theirs` runs on this host: the same major
/// version (for 0.x, the same minor), no newer than ours.
pub(super) fn compatible(theirs: &semver::Version) -> bool {
    let ours = &WIT_VERSION;
    let same_line =
        if ours.major == 0 { theirs.major == 0 && theirs.minor == ours.minor } else { theirs.major == ours.major };
    same_line && theirs <= ours
}

/// The refusal message for an incompatible plugin.
pub(super) fn refusal(theirs: &semver::Version) -> String {
    format!(
        "it was built against opal:plugin@{theirs}, and this host speaks opal:plugin@{WIT_VERSION}; \
         rebuild it with an opal-sdk for opal:plugin@{WIT_VERSION}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_matches_the_wit_file() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(wit.contains(&format!("package opal:plugin@{WIT_VERSION};")), "wit/plugin.wit and WIT_VERSION differ");
    }

    #[test]
    fn versions_are_read_from_the_imports() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = names(&["wasi:io/streams@0.2.6", "opal:plugin/types@0.1.0", "opal:plugin/progress@0.1.0"]);
        assert_eq!(plugin_wit_version(&ok), Ok(Some(semver::Version::new(0, 1, 0))));
        assert_eq!(plugin_wit_version(&names(&["wasi:cli/stdout@0.2.6"])), Ok(None));
        let mixed = names(&["opal:plugin/types@0.1.0", "opal:plugin/progress@0.2.0"]);
        assert!(plugin_wit_version(&mixed).unwrap_err().contains("two versions"));
        assert!(plugin_wit_version(&names(&["opal:plugin/types"])).unwrap_err().contains("without a package version"));
    }

    #[test]
    fn compatibility_follows_semver_with_0_x_minors_as_majors() {
        let v = semver::Version::parse;
        assert!(compatible(&v("0.1.0").unwrap()), "an older patch");
        assert!(compatible(&v("0.1.1").unwrap()), "an older patch");
        assert!(compatible(&v("0.1.2").unwrap()));
        assert!(!compatible(&v("0.2.0").unwrap()), "a newer minor in 0.x");
        assert!(!compatible(&v("0.1.3").unwrap()), "newer than the host");
        assert!(!compatible(&v("1.0.0").unwrap()));
        let refusal = refusal(&v("0.2.0").unwrap());
        assert!(refusal.contains("opal:plugin@0.2.0") && refusal.contains("opal:plugin@0.1.2"), "{refusal}");
    }
}
