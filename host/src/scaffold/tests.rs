use super::*;

#[test]
fn names_follow_the_servers_rules_and_rusts() {
    for ok in ["hello", "ssh-check", "a1", "cert-issue-2"] {
        assert!(check_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "Hello", "1x", "a_b", "a b", "a-", "a--b", "-a", "type", "test", "serde", "opal-sdk"] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
    assert!(check_name(&"a".repeat(65)).is_err());
    let error = check_name("Hello").unwrap_err().to_string();
    assert_eq!(error, "\"Hello\" cannot be a plugin name: it must start with a lowercase letter");
}

#[test]
fn type_names_are_camel_case_and_never_clash() {
    assert_eq!(type_name("hello"), "Hello");
    assert_eq!(type_name("ssh-check"), "SshCheck");
    assert_eq!(type_name("a1-b2"), "A1B2");
    assert_eq!(type_name("plugin"), "PluginPlugin");
    assert_eq!(type_name("params"), "ParamsPlugin");
}

#[test]
fn the_hello_world_is_at_most_15_lines_and_fully_rendered() {
    let files = render("hello", "/opt/opal/sdk").unwrap();
    let file = |name: &str| files.iter().find(|(path, _)| *path == name).map(|(_, text)| text.as_str()).unwrap();
    let lib = file("src/lib.rs");
    assert!(lib.lines().count() <= 15, "{lib}");
    assert!(lib.contains("pub struct Hello;") && lib.contains("export_plugin!(Hello)"), "{lib}");
    assert!(file("tests/native.rs").contains("use hello::Hello;"));
    for (path, text) in &files {
        assert!(!text.contains("{{"), "{path} has a placeholder left: {text}");
    }
    let manifest: toml::Table = toml::from_str(file("Cargo.toml")).unwrap();
    assert_eq!(manifest["package"]["name"].as_str(), Some("hello"));
    assert_eq!(manifest["dependencies"]["opal-sdk"]["path"].as_str(), Some("/opt/opal/sdk"));
    assert!(manifest.contains_key("workspace"), "a workspace of its own");
    assert!(file("README.md").contains("/opt/opal/docs/plugin-guide.md"));
    assert!(file("Cargo.lock").contains("name = \"serde\""), "the checkout's lock");
}

#[test]
fn an_sdk_path_with_quotes_stays_valid_toml() {
    let files = render("x", r#"C:\odd "path"\sdk"#).unwrap();
    let manifest: toml::Table = toml::from_str(&files[0].1).unwrap();
    assert_eq!(manifest["dependencies"]["opal-sdk"]["path"].as_str(), Some(r#"C:\odd "path"\sdk"#));
}

/// A directory that looks like an Opal checkout: `sdk/Cargo.toml` names opal-sdk.
fn fake_checkout(dir: &Path) -> PathBuf {
    let sdk = dir.join("checkout/sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    std::fs::write(sdk.join("Cargo.toml"), "[package]\nname = \"opal-sdk\"\n").unwrap();
    sdk
}

#[test]
fn create_writes_the_crate_and_names_the_sdk_by_the_shortest_sure_path() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = fake_checkout(tmp.path());

    let outside = tmp.path().join("elsewhere/hello");
    let written = create("hello", &outside, &sdk).unwrap();
    assert_eq!(written.len(), TEMPLATES.len());
    assert!(outside.join("src/lib.rs").is_file() && outside.join("tests/native.rs").is_file());
    let manifest = std::fs::read_to_string(outside.join("Cargo.toml")).unwrap();
    let absolute = sdk.canonicalize().unwrap();
    assert!(manifest.contains(&format!("path = \"{}\"", absolute.display())), "{manifest}");

    let inside = tmp.path().join("checkout/plugins/hello");
    create("hello", &inside, &sdk).unwrap();
    let manifest = std::fs::read_to_string(inside.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \"../../sdk\""), "{manifest}");
}

#[test]
fn create_refuses_a_used_directory_and_a_missing_sdk() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = fake_checkout(tmp.path());
    let used = tmp.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("notes.txt"), "mine").unwrap();
    assert!(matches!(create("hello", &used, &sdk), Err(ScaffoldError::Exists(_))));
    assert_eq!(std::fs::read_to_string(used.join("notes.txt")).unwrap(), "mine", "left alone");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(create("hello", &empty, &sdk).is_ok(), "an empty directory is fine");

    let error = create("hello", &tmp.path().join("new"), tmp.path()).unwrap_err();
    assert!(matches!(error, ScaffoldError::SdkNotFound(_)), "{error}");
    assert!(!tmp.path().join("new").exists(), "nothing written");
}
