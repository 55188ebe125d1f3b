//! `opal token new`: a fresh API token, and the config lines that accept it.

use clap::Args;

use opal_host::auth::{Role, Scope, generate_token};

/// Arguments of `opal token new`.
#[derive(Args)]
pub(crate) struct NewTokenArgs {
    /// Who holds the token; recorded as `user:<name>` on what they start or cancel.
    #[arg(long)]
    name: String,
    /// admin, operator or viewer.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// A target pattern (`site-a/*`, `**`); repeatable. Required unless the role is admin.
    #[arg(long = "target")]
    targets: Vec<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "admin" => Ok(Role::Admin),
        "operator" => Ok(Role::Operator),
        "viewer" => Ok(Role::Viewer),
        "metrics" => Ok(Role::Metrics),
        _ => Err(format!("{text:?} is not a role: admin, operator, viewer or metrics")),
    }
}

/// Prints the token once (it is not stored anywhere) and the `[[auth.tokens]]`
/// entry, which holds only its hash.
pub(crate) fn run(args: NewTokenArgs) -> anyhow::Result<()> {
    match (args.role, args.targets.is_empty()) {
        (Role::Admin, false) => anyhow::bail!("an admin sees every target; drop --target or pick another role"),
        (Role::Metrics, false) => anyhow::bail!("a metrics token reads only /metrics; drop --target"),
        (Role::Operator | Role::Viewer, true) => {
            anyhow::bail!("a {} needs at least one --target pattern (`**` for every target)", args.role.as_str())
        }
        _ => {}
    }
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    anyhow::ensure!(
        (1..=64).contains(&args.name.len()) && args.name.chars().all(name_ok),
        "--name must be 1 to 64 letters, digits, '-', '_', '.' or '@'"
    );
    Scope::from_patterns(&args.targets).map_err(anyhow::Error::msg)?;
    let (token, hash) = generate_token().map_err(anyhow::Error::msg)?;
    let targets = if args.targets.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = args.targets.iter().map(|t| format!("{t:?}")).collect();
        format!("targets = [{}]\n", list.join(", "))
    };
    eprintln!("The token, shown once; give it to {} and keep it secret:", args.name);
    println!("{token}");
    eprintln!("\nAdd this to the server's config file (it holds only the token's sha256):");
    println!(
        "\n[[auth.tokens]]\nname = {:?}\nrole = {:?}\n{targets}sha256 = \"{}\"",
        args.name,
        args.role.as_str(),
        hash.to_hex()
    );
    Ok(())
}
