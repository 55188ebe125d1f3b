//! docs/plugin-guide.md cannot drift from the code. Every Rust and TOML block
//! in it follows a marker that says where it comes from, and is checked
//! against that:
//! - `<!-- opal plugin new hello: PATH -->`: exactly the file PATH that
//!   `opal plugin new hello` writes (with the SDK at `/home/you/opal/sdk`);
//! - `<!-- excerpt: PATH -->`: lines that appear together, in order, in PATH
//!   (a file of this repository), give or take a common indentation.
//!
//! The scaffold's files are also built and run for real by `plugin_new.rs`,
//! and the excerpts' files by their own crates' tests.

use std::path::Path;

/// The SDK path the guide shows in the scaffold's `Cargo.toml`.
const SDK: &str = "/home/you/opal/sdk";

/// A fenced code block and the marker before it.
struct Block {
    /// The text of the HTML comment on the last non-blank line before the fence.
    marker: Option<String>,
    lang: String,
    text: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut last = "";
    while let Some((n, line)) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let marker = last.strip_prefix("<!--").and_then(|m| m.strip_suffix("-->")).map(|m| m.trim().to_owned());
            let mut text = String::new();
            for (_, line) in lines.by_ref() {
                if line == "```" {
                    break;
                }
                text.push_str(line);
                text.push('\n');
            }
            blocks.push(Block { marker, lang: lang.to_owned(), text, line: n + 1 });
            last = "";
        } else if !line.trim().is_empty() {
            last = line.trim();
        }
    }
    blocks
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Whether `excerpt`'s lines appear together in `source`, all indented alike.
fn appears_in(excerpt: &str, source: &str) -> bool {
    let want: Vec<&str> = excerpt.lines().map(str::trim_end).collect();
    let have: Vec<&str> = source.lines().map(str::trim_end).collect();
    let Some(first) = want.first() else { return false };
    (0..have.len()).any(|start| {
        let Some(indent) = have[start].strip_suffix(first).filter(|i| i.trim().is_empty()) else { return false };
        want.iter().enumerate().all(|(i, line)| match have.get(start + i) {
            Some(got) if line.is_empty() => got.is_empty(),
            Some(got) => got.strip_prefix(indent) == Some(*line),
            None => false,
        })
    })
}

#[test]
fn every_code_block_in_the_plugin_guide_is_a_checked_real_source() {
    let guide = std::fs::read_to_string(root().join("docs/plugin-guide.md")).unwrap();
    let scaffold = opal_host::scaffold::render("hello", SDK).unwrap();
    let mut checked = Vec::new();
    for block in blocks(&guide) {
        let at = format!("docs/plugin-guide.md:{} ({})", block.line, block.marker.as_deref().unwrap_or("no marker"));
        if !matches!(block.lang.as_str(), "rust" | "toml") {
            continue;
        }
        let marker = block.marker.as_deref().unwrap_or_else(|| panic!("{at}: a {} block needs a marker", block.lang));
        if let Some(path) = marker.strip_prefix("opal plugin new hello:").map(str::trim) {
            let (_, written) = scaffold.iter().find(|(p, _)| *p == path).unwrap_or_else(|| panic!("{at}: no {path}"));
            assert_eq!(&block.text, written, "{at}: not what `opal plugin new hello` writes");
        } else if let Some(path) = marker.strip_prefix("excerpt:").map(str::trim) {
            let source = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert!(appears_in(&block.text, &source), "{at}: these lines are not in {path}:\n{}", block.text);
        } else {
            panic!("{at}: unknown marker");
        }
        checked.push(marker.to_owned());
    }
    for must in ["opal plugin new hello: src/lib.rs", "opal plugin new hello: tests/native.rs"] {
        assert!(checked.iter().any(|m| m == must), "the guide shows {must}: {checked:?}");
    }
}

#[test]
fn the_guides_hello_world_is_at_most_15_lines() {
    let guide = std::fs::read_to_string(root().join("docs/plugin-guide.md")).unwrap();
    let hello = blocks(&guide)
        .into_iter()
        .find(|b| b.marker.as_deref() == Some("opal plugin new hello: src/lib.rs"))
        .expect("the guide shows the hello world");
    assert!(hello.text.lines().count() <= 15, "{} lines:\n{}", hello.text.lines().count(), hello.text);
}

#[test]
fn excerpts_must_match_whole_lines_in_order() {
    let source = "fn f() {\n    let a = 1;\n\n    let b = 2;\n}\n";
    assert!(appears_in("let a = 1;\n\nlet b = 2;\n", source));
    assert!(!appears_in("let b = 2;\nlet a = 1;\n", source), "order matters");
    assert!(!appears_in("let a = 1;\nlet b = 2;\n", source), "the blank line matters");
    assert!(!appears_in("a = 1;\n", source), "whole lines only");
}
