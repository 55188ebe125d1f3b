//! `opal plugin new <name>`: writes a plugin crate (see `opal_host::scaffold`)
//! and says how to test, build and serve it.

use std::path::PathBuf;

use clap::Args;
use opal_host::scaffold;

/// Flags of `opal plugin new`.
#[derive(Args)]
pub(crate) struct NewArgs {
    /// The plugin's name: its operation type and its crate's name (lowercase
    /// letters, digits and '-', starting with a letter).
    name: String,
    /// Where to create the crate [default: ./<NAME>]. It must not exist, or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The opal-sdk crate to depend on, by path [default: the sdk/ directory
    /// of the checkout this `opal` was built from].
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = args.sdk_path.unwrap_or_else(scaffold::default_sdk_path);
    scaffold::create(&args.name, &dir, &sdk)?;
    let wasm = format!("target/wasm32-wasip2/debug/{}.wasm", args.name.replace('-', "_"));
    println!("Created the plugin `{}` in {}.", args.name, dir.display());
    println!();
    println!("  cd {}", dir.display());
    println!("  cargo test                                        # native tests, no wasm runtime");
    println!("  cargo build --target wasm32-wasip2                # builds {wasm}");
    println!("  opal serve --plugins target/wasm32-wasip2/debug   # serves it; reloads it after each build");
    println!();
    println!("Then start a `{}` operation at http://127.0.0.1:8080/.", args.name);
    Ok(())
}
